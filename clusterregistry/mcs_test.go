package clusterregistry_test

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

func newMCSRegistry(t *testing.T, mcs bool) *clusterregistry.Registry {
	t.Helper()
	r, err := clusterregistry.New(clusterregistry.Options{
		DomainSuffix: "cluster.local",
		Namespace:    "istio-system",
		MCS:          mcs,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// installMCSCRDs installs the ServiceExport and ServiceImport CRDs of the mcs-api
// module into c.
func installMCSCRDs(t *testing.T, c *kubetest.Cluster) {
	t.Helper()
	for _, crd := range [][]byte{mcscrd.ServiceExportCRD, mcscrd.ServiceImportCRD} {
		if err := kubetest.Apply(t.Context(), c.Config, crd); err != nil {
			t.Fatal(err)
		}
	}
}

// exportService creates a ServiceExport of namespace/name in c and returns it.
func exportService(t *testing.T, c *kubetest.Cluster, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.x-k8s.io/v1alpha1",
		"kind":       "ServiceExport",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
	}}
	// A CRD just installed may take a moment to be served.
	var created *unstructured.Unstructured
	kubetest.Eventually(t, 20*time.Second, func() error {
		created, err = dyn.Resource(clusterregistry.ServiceExportResource).Namespace(namespace).Create(t.Context(), obj, metav1.CreateOptions{})
		return err
	})
	return created
}

func unexportService(t *testing.T, c *kubetest.Cluster, namespace, name string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := dyn.Resource(clusterregistry.ServiceExportResource).Namespace(namespace).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// exportRecorder records the services OnExportsChange names.
type exportRecorder struct {
	mu   sync.Mutex
	seen map[types.NamespacedName]int
}

func (e *exportRecorder) record(k types.NamespacedName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen[k]++
}

func (e *exportRecorder) count(k types.NamespacedName) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[k]
}

// TestMCSExports: in MCS mode, a Service is served under its clusterset host from
// the clusters that export it, and only while they do; Exports reports each export
// with its creation time and ports, and a ServiceExport without a Service
// contributes no endpoints. A cluster that does not serve the ServiceExport CRD
// syncs and serves its cluster.local hosts, exports nothing and says why in its
// status, and picks up the CRD once it is installed. With MCS mode off, no
// clusterset host appears.
func TestMCSExports(t *testing.T) {
	ctx := t.Context()
	installMCSCRDs(t, cluster)
	noCRD := startCluster(t, "mcs-nocrd")
	const ns = "mcs-sample"
	for i, c := range []*kubetest.Cluster{cluster, noCRD} {
		svc := kubetest.Service{
			Namespace: ns, Name: "helloworld",
			Ports: []corev1.ServicePort{httpPort(5000, 5000)},
			Backends: []kubetest.Backend{{Pod: fmt.Sprintf("hw-v%d", i+1), IP: fmt.Sprintf("10.%d.0.1", i+1), Ready: true,
				Labels: map[string]string{"version": fmt.Sprintf("v%d", i+1)}}},
		}
		if err := kubetest.Deploy(ctx, c.Client, svc); err != nil {
			t.Fatal(err)
		}
	}
	const (
		localHost = "helloworld." + ns + ".svc.cluster.local"
		setHost   = "helloworld." + ns + ".svc.clusterset.local"
	)
	hw := types.NamespacedName{Namespace: ns, Name: "helloworld"}
	if got := clusterregistry.ClustersetHost(ns, "helloworld"); got != setHost {
		t.Fatalf("ClustersetHost = %q, want %q", got, setHost)
	}

	r := newMCSRegistry(t, true)
	rec := &exportRecorder{seen: map[types.NamespacedName]int{}}
	r.OnExportsChange(rec.record)
	r.SetCluster("c1", "test", cluster.Config)
	r.SetCluster("c2", "test", noCRD.Config)
	waitSynced(t, r, "c1")
	waitSynced(t, r, "c2") // not held up by the missing CRD

	// Both clusters serve the cluster.local host; neither exports it yet.
	for _, id := range []network.ClusterID{"c1", "c2"} {
		if got := addresses(r, localHost, 5000, id); len(got) != 1 {
			t.Errorf("%s: %s endpoints %v, want one", id, localHost, got)
		}
	}
	if got := r.Services(setHost); len(got) != 0 {
		t.Errorf("%s served before any export: %v", setHost, got)
	}
	kubetest.Eventually(t, 20*time.Second, func() error {
		st := clusterStatus(r, "c2").ServiceExports
		if st == nil || !strings.Contains(st.Unavailable, "not served") {
			return fmt.Errorf("c2 ServiceExports status %+v, want the CRD reported missing", st)
		}
		if st := clusterStatus(r, "c1").ServiceExports; st == nil || st.Unavailable != "" {
			return fmt.Errorf("c1 ServiceExports status %+v, want watched", st)
		}
		return nil
	})

	// Exported in c1: served under the clusterset host from c1 alone.
	services := clusterStatus(r, "c1").Services
	se := exportService(t, cluster, ns, "helloworld")
	kubetest.Eventually(t, 20*time.Second, func() error {
		if got := addresses(r, setHost, 5000, "c1"); !slices.Equal(got, []string{"10.1.0.1"}) {
			return fmt.Errorf("%s endpoints in c1 %v, want [10.1.0.1]", setHost, got)
		}
		return nil
	})
	if got := r.Services(setHost); len(got) != 1 || got["c1"].Service.Host != setHost {
		t.Errorf("%s shards %v, want c1's alone, with the clusterset host", setHost, got)
	}
	if !slices.Contains(r.Hosts(), setHost) {
		t.Errorf("Hosts() %v lacks %s", r.Hosts(), setHost)
	}
	exports := r.Exports(ns, "helloworld")
	want := []clusterregistry.Export{{
		Cluster: "c1", Namespace: ns, Name: "helloworld", Created: se.GetCreationTimestamp().Time, HasService: true,
		Ports: []clusterregistry.ServicePort{{Name: "http", Port: 5000, Protocol: "TCP"}},
	}}
	if fmt.Sprint(exports) != fmt.Sprint(want) {
		t.Errorf("Exports = %+v, want %+v", exports, want)
	}
	if rec.count(hw) == 0 {
		t.Error("OnExportsChange not told of the export")
	}
	if st := clusterStatus(r, "c1"); st.Services != services || st.ServiceExports.Exports != 1 {
		t.Errorf("c1 status: %d services, %+v; want %d services (the clusterset host not counted), 1 export", st.Services, st.ServiceExports, services)
	}

	// A ServiceExport without a Service is listed, and serves nothing.
	exportService(t, cluster, ns, "ghost")
	kubetest.Eventually(t, 20*time.Second, func() error {
		if got := r.Exports(ns, "ghost"); len(got) != 1 || got[0].HasService {
			return fmt.Errorf("Exports of ghost %+v, want one without a Service", got)
		}
		return nil
	})
	if got := r.Services("ghost." + ns + ".svc.clusterset.local"); len(got) != 0 {
		t.Errorf("an export without a Service is served: %v", got)
	}

	// The CRD installed in c2 later, and the service exported there: c2 joins.
	installMCSCRDs(t, noCRD)
	exportService(t, noCRD, ns, "helloworld")
	kubetest.Eventually(t, 60*time.Second, func() error {
		if got := addresses(r, setHost, 5000, "c2"); !slices.Equal(got, []string{"10.2.0.1"}) {
			return fmt.Errorf("%s endpoints in c2 %v, want [10.2.0.1]", setHost, got)
		}
		if st := clusterStatus(r, "c2").ServiceExports; st == nil || st.Unavailable != "" {
			return fmt.Errorf("c2 ServiceExports status %+v, want watched", st)
		}
		return nil
	})
	if got := r.Exports(ns, "helloworld"); len(got) != 2 || got[1].Cluster != "c2" {
		t.Errorf("Exports = %+v, want c1's and c2's", got)
	}

	// Unexported in c1: c1's endpoints withdrawn from the clusterset host, not from
	// its cluster.local host.
	before := rec.count(hw)
	unexportService(t, cluster, ns, "helloworld")
	kubetest.Eventually(t, 20*time.Second, func() error {
		if got := r.Services(setHost); len(got) != 1 || got["c2"] == nil {
			return fmt.Errorf("%s shards %v, want c2's alone", setHost, got)
		}
		if rec.count(hw) == before {
			return fmt.Errorf("OnExportsChange not told of the withdrawal")
		}
		return nil
	})
	if got := addresses(r, localHost, 5000, "c1"); len(got) != 1 {
		t.Errorf("c1's %s endpoints %v after unexporting, want them kept", localHost, got)
	}
	if got := r.Exports(ns, "helloworld"); len(got) != 1 || got[0].Cluster != "c2" {
		t.Errorf("Exports = %+v, want c2's alone", got)
	}

	// Discovery selectors that leave the namespace out withdraw its exports, with a
	// Service or without.
	mc, err := network.ParseMeshConfig([]byte("discoverySelectors: [{matchLabels: {mcs: selected}}]"))
	if err != nil {
		t.Fatal(err)
	}
	r.SetDiscoverySelectors(mc.DiscoverySelectors)
	kubetest.Eventually(t, 20*time.Second, func() error {
		if got := r.Services(setHost); len(got) != 0 {
			return fmt.Errorf("%s shards %v in an unselected namespace", setHost, got)
		}
		if got := r.ExportedServices(); len(got) != 0 {
			return fmt.Errorf("exports %v in an unselected namespace", got)
		}
		return nil
	})

	// MCS mode off: the same clusters give no clusterset host, and no export status.
	off := newMCSRegistry(t, false)
	off.SetCluster("c2", "test", noCRD.Config)
	waitSynced(t, off, "c2")
	if got := addresses(off, localHost, 5000, "c2"); len(got) != 1 {
		t.Errorf("MCS off: %s endpoints %v, want one", localHost, got)
	}
	if hosts := off.Hosts(); slices.ContainsFunc(hosts, clusterregistry.IsClustersetHost) {
		t.Errorf("MCS off: hosts %v include a clusterset host", hosts)
	}
	if st := clusterStatus(off, "c2"); st.ServiceExports != nil || len(off.Exports(ns, "helloworld")) != 0 {
		t.Errorf("MCS off: export status %+v, exports %v", st.ServiceExports, off.Exports(ns, "helloworld"))
	}
}

// TestMCSExportsForbidden: a cluster whose credentials may not list ServiceExports
// syncs, serves its cluster.local hosts, exports nothing and says why.
func TestMCSExportsForbidden(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Client
	installMCSCRDs(t, cluster)
	const (
		ns   = "mcs-forbidden"
		user = "mcs-no-exports"
	)
	svc := kubetest.Service{
		Namespace: ns, Name: "web",
		Ports:    []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.8.0.1", Ready: true}},
	}
	if err := kubetest.Deploy(ctx, cs, svc); err != nil {
		t.Fatal(err)
	}
	exportService(t, cluster, ns, "web")
	// What Horizon read before MCS mode: no ServiceExports.
	read := []string{"get", "list", "watch"}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "pods", "nodes", "namespaces"}, Verbs: read},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
	}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}

	r := newMCSRegistry(t, true)
	r.SetCluster("c1", "test", cfg)
	waitSynced(t, r, "c1")
	if got := addresses(r, "web."+ns+".svc.cluster.local", 80, "c1"); !slices.Equal(got, []string{"10.8.0.1"}) {
		t.Errorf("cluster.local endpoints %v, want [10.8.0.1]", got)
	}
	kubetest.Eventually(t, 20*time.Second, func() error {
		if st := clusterStatus(r, "c1").ServiceExports; st == nil || !strings.Contains(st.Unavailable, "may not list ServiceExports") {
			return fmt.Errorf("ServiceExports status %+v, want the refusal reported", st)
		}
		return nil
	})
	if got := r.Services("web." + ns + ".svc.clusterset.local"); len(got) != 0 {
		t.Errorf("clusterset host served without access to ServiceExports: %v", got)
	}
	if st := clusterStatus(r, "c1"); st.LastError != "" {
		t.Errorf("the refusal is reported as the cluster's error: %q", st.LastError)
	}
}
