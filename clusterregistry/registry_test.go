package clusterregistry_test

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// cluster is a real API server shared by the tests of this package; each test uses
// its own namespaces. Tests that stop an API server start their own on env.
var (
	env     *kubetest.Environment
	cluster *kubetest.Cluster
)

func TestMain(m *testing.M) {
	kubetest.Main(m, func(e *kubetest.Environment, cs []*kubetest.Cluster) { env, cluster = e, cs[0] }, "registry")
}

func newRegistry(t *testing.T, timeout time.Duration) *clusterregistry.Registry {
	t.Helper()
	r, err := clusterregistry.New(clusterregistry.Options{
		DomainSuffix: "cluster.local",
		Namespace:    "istio-system",
		SyncTimeout:  timeout,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func httpPort(port, target int32) corev1.ServicePort {
	return corev1.ServicePort{Name: "http", Port: port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(target)}
}

func waitSynced(t *testing.T, r *clusterregistry.Registry, id network.ClusterID) {
	t.Helper()
	kubetest.Eventually(t, 20*time.Second, func() error {
		for _, st := range r.Clusters() {
			if st.ID == id && st.State == clusterregistry.StateSynced {
				return nil
			}
		}
		return fmt.Errorf("cluster %s not synced: %+v", id, r.Clusters())
	})
}

func TestEndpointsFromRealCluster(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Client
	const ns = "ep-sample"
	if err := kubetest.CreateNode(ctx, cs, "node-a", "us-east", "us-east-1a", "rack-7"); err != nil {
		t.Fatal(err)
	}
	svc := kubetest.Service{
		Namespace: ns, Name: "helloworld",
		Ports: []corev1.ServicePort{httpPort(5000, 8080), {Name: "grpc", Port: 7070, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(17070)}},
		Backends: []kubetest.Backend{
			{Pod: "hw-v1", IP: "10.1.0.1", Node: "node-a", Ready: true, ServiceAccount: "hw",
				Labels: map[string]string{"version": "v1", network.LabelTLSMode: network.TLSModeIstio}},
			{Pod: "hw-v1b", IP: "10.1.0.2", Zone: "hinted-zone", Ready: true,
				Labels: map[string]string{"version": "v1", network.LabelNetwork: "net-pod"}},
		},
	}
	if err := kubetest.Deploy(ctx, cs, svc); err != nil {
		t.Fatal(err)
	}

	r := newRegistry(t, 0)
	var mu sync.Mutex
	changes := map[clusterregistry.Change]int{}
	r.Subscribe(func(c clusterregistry.Change) {
		mu.Lock()
		changes[c]++
		mu.Unlock()
	})
	r.SetCluster("c1", "test", cluster.Config)
	waitSynced(t, r, "c1")
	if !r.HasSynced() {
		t.Fatal("registry not synced although its only cluster is")
	}

	const host = "helloworld.ep-sample.svc.cluster.local"
	eps := r.Endpoints(host, 5000)["c1"]
	if len(eps) != 2 {
		t.Fatalf("endpoints = %+v, want 2", eps)
	}
	want := clusterregistry.Endpoint{
		Address: "10.1.0.1", Port: 8080, Ready: true,
		Locality:       &clusterregistry.Locality{Region: "us-east", Zone: "us-east-1a", Subzone: "rack-7"},
		TLSMode:        network.TLSModeIstio,
		ServiceAccount: "hw", Cluster: "c1", Pod: "ep-sample/hw-v1", Node: "node-a",
	}
	got := eps[0]
	if got.Labels["version"] != "v1" || got.Labels["app"] != "helloworld" {
		t.Errorf("labels = %v", got.Labels)
	}
	got.Labels = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("endpoint\n got %+v (locality %+v)\nwant %+v (locality %+v)", got, got.GetLocality(), want, want.GetLocality())
	}
	if b := eps[1]; b.Network != "net-pod" || b.GetLocality().Zone != "hinted-zone" || b.TLSMode != "" {
		t.Errorf("second endpoint = %+v, want network net-pod, zone hint, no tlsMode", b)
	}
	if g := r.Endpoints(host, 7070)["c1"]; len(g) != 2 || g[0].Port != 17070 {
		t.Errorf("grpc port endpoints = %+v", g)
	}
	wantPorts := []clusterregistry.ServicePort{
		{Name: "http", Port: 5000, Protocol: "TCP", TargetPort: 8080},
		{Name: "grpc", Port: 7070, Protocol: "TCP", TargetPort: 17070},
	}
	if st := r.Services(host)["c1"]; st == nil || !reflect.DeepEqual(st.Service.Ports, wantPorts) ||
		!reflect.DeepEqual(st.Service.Selector, map[string]string{"app": "helloworld"}) {
		t.Errorf("service = %+v, want ports %+v and selector app=helloworld", st, wantPorts)
	}
	mu.Lock()
	if changes[clusterregistry.Change{Host: host, Cluster: "c1"}] == 0 {
		t.Errorf("no change notified for %s: %v", host, changes)
	}
	mu.Unlock()

	// The system namespace's network label applies to endpoints without a pod label.
	if err := kubetest.EnsureNamespace(ctx, cs, "istio-system", map[string]string{network.LabelNetwork: "net-ns"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ns, err := cs.CoreV1().Namespaces().Get(context.Background(), "istio-system", metav1.GetOptions{}); err == nil {
			delete(ns.Labels, network.LabelNetwork)
			_, _ = cs.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{})
		}
	})
	kubetest.Eventually(t, 10*time.Second, func() error {
		eps := r.Endpoints(host, 5000)["c1"]
		if len(eps) != 2 || eps[0].Network != "net-ns" || eps[1].Network != "net-pod" {
			return fmt.Errorf("networks: %+v", eps)
		}
		return nil
	})
	// The label is also the cluster's own network, which proxies naming only their
	// cluster (CLUSTER_ID) are on.
	if got := r.ClusterNetworks(); len(got) != 1 || got["c1"] != "net-ns" {
		t.Errorf("ClusterNetworks() = %v, want c1: net-ns", got)
	}

	// A pod that turns not-ready leaves; a new ready one arrives.
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, "hw-v1b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := kubetest.SetPodStatus(ctx, cs, pod, "10.1.0.2", false); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		if eps := r.Endpoints(host, 5000)["c1"]; len(eps) != 1 || eps[0].Address != "10.1.0.1" {
			return fmt.Errorf("after not-ready: %+v", eps)
		}
		return nil
	})

	// A terminating pod leaves at once, before its EndpointSlice changes.
	grace := int64(300)
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "hw-v1", metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // no kubelet finishes the termination: end it, so the test can run again
		now := int64(0)
		_ = cs.CoreV1().Pods(ns).Delete(context.Background(), "hw-v1", metav1.DeleteOptions{GracePeriodSeconds: &now})
	})
	kubetest.Eventually(t, 10*time.Second, func() error {
		if eps := r.Endpoints(host, 5000); len(eps) != 0 {
			return fmt.Errorf("after terminating: %+v", eps)
		}
		return nil
	})

	// A new selector or target port is a change of the shard.
	cur, err := cs.CoreV1().Services(ns).Get(ctx, "helloworld", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Selector = map[string]string{"app": "helloworld", "version": "v2"}
	cur.Spec.Ports[0].TargetPort = intstr.FromString("http-alt")
	if _, err := cs.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		st := r.Services(host)["c1"]
		if st == nil || st.Service.Selector["version"] != "v2" || st.Service.Ports[0].TargetPortName != "http-alt" {
			return fmt.Errorf("after the update: %+v", st)
		}
		return nil
	})

	// Deleting the service removes its shard.
	if err := cs.CoreV1().Services(ns).Delete(ctx, "helloworld", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		if s := r.Services(host); len(s) != 0 {
			return fmt.Errorf("service still known: %+v", s)
		}
		return nil
	})
}

func TestUnreachableClusterTimesOutWhileGoodOneServes(t *testing.T) {
	ctx := t.Context()
	if err := kubetest.Deploy(ctx, cluster.Client, kubetest.Service{
		Namespace: "timeout-sample", Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.2.0.1", Ready: true}},
	}); err != nil {
		t.Fatal(err)
	}
	r := newRegistry(t, 2*time.Second)
	r.SetCluster("good", "test", cluster.Config)
	// A port nothing listens on.
	dead := rest.CopyConfig(cluster.Config)
	dead.Host = "https://127.0.0.1:1"
	r.SetCluster("dead", "test", dead)

	waitSynced(t, r, "good")
	kubetest.Eventually(t, 10*time.Second, func() error {
		for _, st := range r.Clusters() {
			if st.ID == "dead" {
				if st.State != clusterregistry.StateError && st.State != clusterregistry.StateTimedOut {
					return fmt.Errorf("dead cluster state %s", st.State)
				}
				if !strings.Contains(st.LastError, "connection refused") {
					return fmt.Errorf("dead cluster last error %q", st.LastError)
				}
				return nil
			}
		}
		return fmt.Errorf("dead cluster missing")
	})
	if r.HasSynced() {
		for _, st := range r.Clusters() {
			if st.ID == "dead" && st.State != clusterregistry.StateTimedOut {
				t.Fatalf("registry synced while cluster dead is %s", st.State)
			}
		}
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		if !r.HasSynced() {
			return fmt.Errorf("registry not synced after the timeout: %+v", r.Clusters())
		}
		return nil
	})
	if eps := r.Endpoints("web.timeout-sample.svc.cluster.local", 80); len(eps["good"]) != 1 {
		t.Fatalf("good cluster endpoints = %+v", eps)
	}
	for _, st := range r.Clusters() {
		if strings.Contains(st.LastError, cluster.Config.BearerToken) {
			t.Fatalf("status leaks the token: %q", st.LastError)
		}
	}
}

// TestRotationNeverDropsEndpoints swaps a cluster's credentials while a reader polls:
// the service must be visible at every read.
func TestRotationNeverDropsEndpoints(t *testing.T) {
	ctx := t.Context()
	if err := kubetest.Deploy(ctx, cluster.Client, kubetest.Service{
		Namespace: "rotate-sample", Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.3.0.1", Ready: true}},
	}); err != nil {
		t.Fatal(err)
	}
	const host = "web.rotate-sample.svc.cluster.local"
	r := newRegistry(t, 5*time.Second)
	r.SetCluster("c", "test", cluster.Config)
	waitSynced(t, r, "c")
	if len(r.Endpoints(host, 80)["c"]) != 1 {
		t.Fatal("endpoint missing before rotation")
	}

	stop := make(chan struct{})
	var misses, reads int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			reads++
			if len(r.Endpoints(host, 80)["c"]) != 1 {
				misses++
			}
		}
	}()
	for i := range 3 {
		kubeconfig, _, err := cluster.MintKubeconfig(ctx, "kube-system", fmt.Sprintf("rotate-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		cfg := restConfig(t, kubeconfig)
		r.SetCluster("c", fmt.Sprintf("rotation %d", i), cfg)
		kubetest.Eventually(t, 20*time.Second, func() error {
			for _, st := range r.Clusters() {
				if st.ID == "c" && st.Source == fmt.Sprintf("rotation %d", i) && st.Rotation == nil && st.State == clusterregistry.StateSynced {
					return nil
				}
			}
			return fmt.Errorf("rotation %d not swapped in: %+v", i, r.Clusters())
		})
	}
	close(stop)
	<-done
	if misses > 0 {
		t.Fatalf("endpoints missing in %d of %d reads during rotation", misses, reads)
	}
	t.Logf("%d reads during 3 rotations, none missed", reads)

	// Rotating to a credential that cannot authenticate keeps the old one serving and
	// shows the failed rotation.
	bad := rest.CopyConfig(cluster.Config)
	bad.BearerToken = "not-a-valid-token"
	r.SetCluster("c", "bad rotation", bad)
	kubetest.Eventually(t, 10*time.Second, func() error {
		for _, st := range r.Clusters() {
			if st.ID == "c" && st.Rotation != nil && strings.Contains(st.Rotation.LastError, "Unauthorized") {
				return nil
			}
		}
		return fmt.Errorf("failed rotation not visible: %+v", r.Clusters())
	})
	if len(r.Endpoints(host, 80)["c"]) != 1 {
		t.Fatal("endpoints lost after a failed rotation")
	}
	for _, st := range r.Clusters() {
		if st.Source != "rotation 2" || st.State != clusterregistry.StateSynced {
			t.Fatalf("old credentials not serving: %+v", st)
		}
	}
}

// TestTrafficDistributionFromRealCluster follows a Service's traffic distribution
// through its field, its annotation and its Namespace's annotation as they change
// on a real API server.
func TestTrafficDistributionFromRealCluster(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Client
	const ns = "td-sample"
	svc := kubetest.Service{Namespace: ns, Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)}}
	if err := kubetest.Deploy(ctx, cs, svc); err != nil {
		t.Fatal(err)
	}
	r := newRegistry(t, 0)
	r.SetCluster("c1", "test", cluster.Config)
	waitSynced(t, r, "c1")
	const host = "web.td-sample.svc.cluster.local"
	want := func(d network.TrafficDistribution, invalid string) {
		t.Helper()
		kubetest.Eventually(t, 10*time.Second, func() error {
			sh := r.Services(host)["c1"]
			if sh == nil {
				return fmt.Errorf("no shard of %s", host)
			}
			if got := sh.Service; got.TrafficDistribution != d || got.InvalidTrafficDistribution != invalid {
				return fmt.Errorf("traffic distribution %q (invalid %q), want %q (invalid %q)", got.TrafficDistribution, got.InvalidTrafficDistribution, d, invalid)
			}
			return nil
		})
	}
	annotateNamespace := func(value string) {
		t.Helper()
		n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if value == "" {
			delete(n.Annotations, network.AnnotationTrafficDistribution)
		} else {
			if n.Annotations == nil {
				n.Annotations = map[string]string{}
			}
			n.Annotations[network.AnnotationTrafficDistribution] = value
		}
		if _, err := cs.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deploy := func() {
		t.Helper()
		if err := kubetest.Deploy(ctx, cs, svc); err != nil {
			t.Fatal(err)
		}
	}
	want(network.DistributionUnset, "")

	annotateNamespace("PreferSameNode") // the namespace's annotation reaches its services
	want(network.DistributionPreferSameNode, "")

	svc.Annotations = map[string]string{network.AnnotationTrafficDistribution: "PreferClose"}
	deploy()
	want(network.DistributionPreferSameZone, "")

	dist := "PreferSameNode"
	svc.TrafficDistribution = &dist
	deploy()
	want(network.DistributionPreferSameNode, "")

	dist = ""
	svc.Annotations = map[string]string{network.AnnotationTrafficDistribution: "Nearest"}
	deploy()
	want(network.DistributionPreferSameNode, `Service annotation networking.istio.io/traffic-distribution "Nearest"`)

	annotateNamespace("") // removing it reaches them too
	want(network.DistributionUnset, `Service annotation networking.istio.io/traffic-distribution "Nearest"`)
}
