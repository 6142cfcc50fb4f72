package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/secrets"
)

// TestRemoteSecretBringsInClusterEndpoints is the user's first step: label a Secret
// holding a kubeconfig for cluster 2 in cluster 1, and cluster 2's services appear.
func TestRemoteSecretBringsInClusterEndpoints(t *testing.T) {
	ctx := t.Context()
	h := startHorizon(t, 10*time.Second)

	kubeconfig, _, err := remote.MintKubeconfig(ctx, "kube-system", "horizon-reader-first")
	if err != nil {
		t.Fatal(err)
	}
	if err := kubetest.CreateNode(ctx, remote.Client, "remote-node-1", "eu-west", "eu-west-2b", ""); err != nil {
		t.Fatal(err)
	}
	deploy(t, remote, kubetest.Service{
		Namespace: "sample", Name: "helloworld",
		Ports: []corev1.ServicePort{{Name: "http", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
		Backends: []kubetest.Backend{{
			Pod: "helloworld-v2", IP: "10.20.0.7", Node: "remote-node-1", Ready: true,
			Labels: map[string]string{"version": "v2", network.LabelTLSMode: network.TLSModeIstio},
		}},
	})
	applySecret(t, remoteSecret("istio-remote-secret-cluster2", map[string][]byte{"cluster2": kubeconfig}))

	const host = "helloworld.sample.svc.cluster.local"
	start := time.Now()
	h.waitEndpoints(t, host, 5000, "cluster2", "10.20.0.7")
	t.Logf("remote endpoints visible %s after the Secret was written", time.Since(start).Round(time.Millisecond))

	h.waitSynced(t, "cluster2")
	ep := h.registry.Endpoints(host, 5000)["cluster2"][0]
	if ep.GetLocality() != (clusterregistry.Locality{Region: "eu-west", Zone: "eu-west-2b"}) {
		t.Errorf("locality = %+v", ep.GetLocality())
	}
	if ep.Labels["version"] != "v2" || ep.TLSMode != network.TLSModeIstio || ep.Cluster != "cluster2" {
		t.Errorf("endpoint = %+v", ep)
	}
	st, ok := h.keyStatus("istio-remote-secret-cluster2", "cluster2")
	if !ok || st.State != secrets.KeyAccepted {
		t.Errorf("key status = %+v", st)
	}
	cs, _ := h.cluster("cluster2")
	if cs.Source != systemNamespace+"/istio-remote-secret-cluster2[cluster2]" || cs.Server != remote.Host || cs.State != clusterregistry.StateSynced {
		t.Errorf("cluster status = %+v", cs)
	}
}

// TestTokenRotation rewrites the Secret with a new token: the registry swaps clients
// with no moment where the cluster's endpoints are missing, and the old token can be
// revoked afterwards without effect.
func TestTokenRotation(t *testing.T) {
	ctx := t.Context()
	h := startHorizon(t, 10*time.Second)
	host := deployWeb(t, remote, "rotation", "10.21.0.1")
	first, _, err := remote.MintKubeconfig(ctx, "kube-system", "rotation-old")
	if err != nil {
		t.Fatal(err)
	}
	applySecret(t, remoteSecret("rotation", map[string][]byte{"rot": first}))
	h.waitEndpoints(t, host, 80, "rot", "10.21.0.1")
	h.waitSynced(t, "rot")

	var missing, reads int
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			reads++
			if len(h.registry.Endpoints(host, 80)["rot"]) == 0 {
				missing++
			}
		}
	}()
	second, _, err := remote.MintKubeconfig(ctx, "kube-system", "rotation-new")
	if err != nil {
		t.Fatal(err)
	}
	applySecret(t, remoteSecret("rotation", map[string][]byte{"rot": second}))
	kubetest.Eventually(t, 15*time.Second, func() error {
		c, _ := h.cluster("rot")
		if c.Rotation != nil || !strings.Contains(h.logs.String(), "cluster swapped to new credentials") {
			return fmt.Errorf("not swapped yet: %+v", c)
		}
		return nil
	})
	// The old credential is gone; the cluster keeps working on the new one.
	if err := remote.RevokeServiceAccount(ctx, "kube-system", "rotation-old"); err != nil {
		t.Fatal(err)
	}
	deploy(t, remote, kubetest.Service{
		Namespace: "rotation", Name: "web",
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.21.0.1", Ready: true}, {Pod: "web-2", IP: "10.21.0.2", Ready: true}},
	})
	h.waitEndpoints(t, host, 80, "rot", "10.21.0.1", "10.21.0.2")
	close(stop)
	<-done
	if missing > 0 {
		t.Fatalf("endpoints missing in %d of %d reads across the rotation", missing, reads)
	}
	t.Logf("%d reads across the rotation, none missing", reads)
	// An unchanged kubeconfig (same bytes written again) is not a rotation.
	swaps := strings.Count(h.logs.String(), "cluster credentials changed")
	s, err := config.Client.CoreV1().Secrets(systemNamespace).Get(ctx, "rotation", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Annotations = map[string]string{"touched": "yes"}
	if _, err := config.Client.CoreV1().Secrets(systemNamespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 5*time.Second, func() error {
		if st, _ := h.keyStatus("rotation", "rot"); st.State != secrets.KeyAccepted {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if n := strings.Count(h.logs.String(), "cluster credentials changed"); n != swaps {
		t.Fatalf("an unchanged kubeconfig caused %d more swaps", n-swaps)
	}
}

// TestRemoveKeyThenSecret removes one cluster by deleting its key, then the other by
// deleting the Secret.
func TestRemoveKeyThenSecret(t *testing.T) {
	ctx := t.Context()
	h := startHorizon(t, 10*time.Second)
	hostA := deployWeb(t, remote, "remove-a", "10.22.0.1")
	hostB := deployWeb(t, third, "remove-b", "10.23.0.1")
	kcA, _, err := remote.MintKubeconfig(ctx, "kube-system", "remove-a")
	if err != nil {
		t.Fatal(err)
	}
	kcB, _, err := third.MintKubeconfig(ctx, "kube-system", "remove-b")
	if err != nil {
		t.Fatal(err)
	}
	applySecret(t, remoteSecret("two-clusters", map[string][]byte{"rm-a": kcA, "rm-b": kcB}))
	h.waitEndpoints(t, hostA, 80, "rm-a", "10.22.0.1")
	h.waitEndpoints(t, hostB, 80, "rm-b", "10.23.0.1")

	applySecret(t, remoteSecret("two-clusters", map[string][]byte{"rm-a": kcA}))
	h.waitEndpoints(t, hostB, 80, "rm-b")
	if _, ok := h.cluster("rm-b"); ok {
		t.Fatal("cluster rm-b still registered after its key was removed")
	}
	h.waitEndpoints(t, hostA, 80, "rm-a", "10.22.0.1")

	deleteSecret(t, "two-clusters")
	h.waitEndpoints(t, hostA, 80, "rm-a")
	kubetest.Eventually(t, 5*time.Second, func() error {
		if len(h.registry.Clusters()) != 0 || len(h.secrets.Status()) != 0 {
			return fmt.Errorf("clusters %+v, status %+v remain", h.registry.Clusters(), h.secrets.Status())
		}
		return nil
	})
}
