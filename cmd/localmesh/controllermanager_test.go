package localmesh_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/horizon-mesh/horizon/cmd/localmesh"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// TestControllerManagerMakesSlices runs kube-controller-manager next to a cluster and
// checks that a Service and Pods written by DeployPods (only what a kubelet would set
// on the pods) become an EndpointSlice as in a real cluster — addresses, readiness,
// node names, zones from the nodes, target references — that it follows scaling and
// readiness, and that it keeps working after the cluster restarts.
func TestControllerManagerMakesSlices(t *testing.T) {
	t.Parallel()
	env, err := localmesh.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	ctx := t.Context()
	c, err := env.StartClusterWith(ctx, "kcm", localmesh.ClusterOptions{ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	if !c.HasControllerManager() {
		t.Fatal("cluster started with ControllerManager reports none")
	}
	if err := localmesh.CreateNode(ctx, c.Client, "node-a", "region-1", "zone-a", ""); err != nil {
		t.Fatal(err)
	}
	svc := localmesh.Service{
		Namespace: "sample", Name: "helloworld",
		Ports: []corev1.ServicePort{{Name: "http", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
		Backends: []localmesh.Backend{
			{Pod: "hello-0", IP: "10.1.0.10", Node: "node-a", Ready: true, Labels: map[string]string{"version": "v1"}},
			{Pod: "hello-1", IP: "10.1.0.11", Node: "node-a", Ready: false, Labels: map[string]string{"version": "v1"}},
		},
	}
	if err := localmesh.DeployPods(ctx, c.Client, svc); err != nil {
		t.Fatal(err)
	}
	want := "10.1.0.10 ready=true node=node-a zone=zone-a pod=hello-0 port=http:5000; 10.1.0.11 ready=false node=node-a zone=zone-a pod=hello-1 port=http:5000"
	kubetest.Eventually(t, 30*time.Second, func() error { return wantSlices(t, c.Client, want) })

	// Scale down to one pod, now ready; the controller follows.
	svc.Backends = []localmesh.Backend{{Pod: "hello-1", IP: "10.1.0.11", Node: "node-a", Ready: true, Labels: map[string]string{"version": "v1"}}}
	if err := localmesh.DeployPods(ctx, c.Client, svc); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, func() error {
		return wantSlices(t, c.Client, "10.1.0.11 ready=true node=node-a zone=zone-a pod=hello-1 port=http:5000")
	})

	// The controller manager stops and starts with the cluster. The new pod's node is
	// registered by DeployPods, as a kubelet would; it has no zone label.
	c.Kill()
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	svc.Backends = append(svc.Backends, localmesh.Backend{Pod: "hello-2", IP: "10.1.0.12", Node: "node-b", Ready: true, Labels: map[string]string{"version": "v1"}})
	if err := localmesh.DeployPods(ctx, c.Client, svc); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, func() error {
		return wantSlices(t, c.Client, "10.1.0.11 ready=true node=node-a zone=zone-a pod=hello-1 port=http:5000; 10.1.0.12 ready=true node=node-b zone= pod=hello-2 port=http:5000")
	})
}

// wantSlices checks that the controller-made slices of helloworld list exactly want.
func wantSlices(t *testing.T, cs kubernetes.Interface, want string) error {
	t.Helper()
	list, err := cs.DiscoveryV1().EndpointSlices("sample").List(t.Context(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=helloworld"})
	if err != nil {
		return err
	}
	var got []string
	for _, s := range list.Items {
		if s.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
			return fmt.Errorf("slice %s managed by %q", s.Name, s.Labels[discoveryv1.LabelManagedBy])
		}
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s:%d", deref(p.Name), deref(p.Port)))
		}
		for _, e := range s.Endpoints {
			pod := ""
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				pod = e.TargetRef.Name
			}
			got = append(got, fmt.Sprintf("%s ready=%v node=%s zone=%s pod=%s port=%s",
				strings.Join(e.Addresses, ","), deref(e.Conditions.Ready), deref(e.NodeName), deref(e.Zone), pod, strings.Join(ports, ",")))
		}
	}
	slices.Sort(got)
	if g := strings.Join(got, "; "); g != want {
		return fmt.Errorf("slices list %q, want %q", g, want)
	}
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
