package clusterregistry_test

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// TestAddRemoveCyclesLeakNothing adds and removes a real cluster 50 times; afterwards
// no goroutine (informer, worker, HTTP connection) of any cycle may remain, and the
// removed cluster's endpoints must be gone.
func TestAddRemoveCyclesLeakNothing(t *testing.T) {
	ctx := t.Context()
	if err := kubetest.Deploy(ctx, cluster.Client, kubetest.Service{
		Namespace: "leak-sample", Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.4.0.1", Ready: true}},
	}); err != nil {
		t.Fatal(err)
	}
	const host = "web.leak-sample.svc.cluster.local"
	r := newRegistry(t, 5*time.Second)
	cycle := func(i int) {
		id := network.ClusterID(fmt.Sprintf("leak-%d", i))
		r.SetCluster(id, "test", cluster.Config)
		kubetest.Eventually(t, 20*time.Second, func() error {
			if len(r.Endpoints(host, 80)[id]) != 1 {
				return fmt.Errorf("cycle %d: endpoints not seen", i)
			}
			return nil
		})
		r.RemoveCluster(id)
		if eps := r.Endpoints(host, 80); len(eps) != 0 {
			t.Fatalf("cycle %d: endpoints remain after removal: %+v", i, eps)
		}
	}
	// One cycle first, so that process-wide goroutines started once by client-go are
	// part of the baseline.
	cycle(-1)
	baseline := goleak.IgnoreCurrent()
	for i := range 50 {
		cycle(i)
	}
	if len(r.Clusters()) != 0 {
		t.Fatalf("clusters remain: %+v", r.Clusters())
	}
	goleak.VerifyNone(t, baseline)
}
