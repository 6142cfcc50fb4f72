package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// The examples tests check that examples/ works as its README says, one job per file:
//
//   - examples_manifests_test.go: every manifest applies cleanly to a real API server,
//     and mesh-networks.yaml describes the reference scenario's networks;
//   - examples_rbac_test.go: the RBAC of horizon.yaml and remote-reader.yaml grants
//     what Horizon reads and nothing more, and matches `horizon create-remote-secret`;
//   - examples_debug_test.go: under horizon.yaml's identity, /debug/ lets a token
//     bound to ClusterRole horizon-debug through from another host, and no other;
//   - examples_bootstrap_test.go: the Envoy bootstraps are valid and point at Horizon;
//   - examples_readme_test.go: examples/README.md lists the files, and its YAML and
//     proxyless bootstrap are accepted;
//   - examples_scenario_test.go: the reference scenario end to end, Horizon assembled
//     by package app as `horizon serve` assembles it.
//
// This file holds what they share: the manifests, and applying them with cleanup.

// examplesDir is the repository's examples/, seen from this package.
const examplesDir = "../examples"

// The reference scenario's names, as the examples spell them.
const (
	helloHost       = "helloworld.sample.svc.cluster.local"
	horizonSA       = "horizon"
	readerSA        = "horizon-reader-service-account"
	v1PodIP         = "10.10.0.90"    // helloworld v1 in cluster1, as in the scenario's proxy log
	v2PodIP         = "10.20.0.91"    // helloworld v2 in cluster2
	network2Gateway = "192.23.120.32" // cluster2's ingress gateway, as in the scenario's proxy log
)

// exampleApply is one Kubernetes manifest of examples/ and the cluster it goes to:
// "config" is cluster1, "remote" is cluster2.
type exampleApply struct {
	cluster string
	file    string
}

// exampleManifests are the Kubernetes manifests in examples/, in the order
// examples/README.md applies them.
var exampleManifests = []exampleApply{
	{"config", "gateway-crd.yaml"},
	{"config", "horizon.yaml"},
	{"config", "mesh-networks.yaml"},
	{"config", "helloworld-v1.yaml"},
	{"config", "cross-network-gateway.yaml"},
	{"remote", "remote-reader.yaml"},
	{"remote", "helloworld-v2.yaml"},
	// Multi-Cluster Services: the export in both clusters (after the mcs-api CRDs,
	// which applyExampleStep installs from the mcs-api module), and the opt-in
	// status-writing rule.
	{"config", "helloworld-export.yaml"},
	{"remote", "helloworld-export.yaml"},
	{"config", "mcs-export-status-rbac.yaml"},
	{"remote", "mcs-export-status-rbac.yaml"},
}

// exampleBootstraps are the Envoy bootstrap files in examples/.
var exampleBootstraps = []string{"envoy-sidecar-bootstrap.yaml", "envoy-gateway-bootstrap.yaml"}

func exampleCluster(name string) *kubetest.Cluster {
	switch name {
	case "config":
		return config
	case "remote":
		return remote
	}
	panic("unknown cluster " + name)
}

func readExample(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(examplesDir, file))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// applyExample applies examples/<file> to c as kubetest.Apply (kubectl apply) does,
// fails the test on an error or a server warning, and deletes the objects again when
// the test ends: other tests share the clusters. Namespaces stay (no controller
// would finish deleting them), as does what they hold that this file did not create.
func applyExample(t *testing.T, c *kubetest.Cluster, file string) []*unstructured.Unstructured {
	t.Helper()
	return applyManifest(t, c, "examples/"+file, readExample(t, file))
}

// applyManifest is applyExample for manifest data named name.
func applyManifest(t *testing.T, c *kubetest.Cluster, name string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := kubetest.ParseManifests(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(objs) == 0 {
		t.Fatalf("%s holds no object", name)
	}
	t.Cleanup(func() { deleteObjects(t, c, objs) })
	w := &warningRecorder{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = w
	if err := kubetest.Apply(t.Context(), cfg, data); err != nil {
		t.Fatalf("apply %s to %s: %v", name, c.Name, err)
	}
	if got := w.list(); len(got) > 0 {
		t.Errorf("apply %s to %s: the server warned: %q", name, c.Name, got)
	}
	return objs
}

// deleteObjects deletes objs from c, last first, Namespaces excepted, and waits until
// a deleted CustomResourceDefinition is gone so that the next test can create it anew.
func deleteObjects(t *testing.T, c *kubetest.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	mapper := restMapper(t, c.Config)
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Error(err)
		return
	}
	for _, o := range slices.Backward(objs) {
		gvk := o.GroupVersionKind()
		if gvk.Kind == "Namespace" {
			continue
		}
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("delete %s %s: %v", gvk.Kind, o.GetName(), err)
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		if err := ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete %s %s/%s from %s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), c.Name, err)
			continue
		}
		if gvk.Kind == "CustomResourceDefinition" {
			kubetest.Eventually(t, 30*time.Second, func() error {
				if _, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					return fmt.Errorf("CustomResourceDefinition %s still there after deletion (%v)", o.GetName(), err)
				}
				return nil
			})
		}
	}
}

func restMapper(t *testing.T, cfg *rest.Config) meta.RESTMapper {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
}

// warningRecorder keeps the warnings an API server returns.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string // guarded by mu
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningRecorder) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}
