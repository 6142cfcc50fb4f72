package e2e

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// TestExamplesRBAC checks, as the service accounts themselves (impersonated), that
// horizon.yaml and remote-reader.yaml grant what Horizon reads and nothing more.
func TestExamplesRBAC(t *testing.T) {
	read := []string{"get", "list", "watch"}
	endpointSources := []groupResource{
		{"", "services"}, {"", "pods"}, {"", "nodes"}, {"", "namespaces"}, {"discovery.k8s.io", "endpointslices"},
	}
	t.Run("horizon in the config cluster", func(t *testing.T) {
		applyExample(t, config, "gateway-crd.yaml")
		applyExample(t, config, "horizon.yaml")
		as := impersonate(t, config, systemNamespace, horizonSA)
		clusterWide := append(slices.Clone(endpointSources), groupResource{"networking.istio.io", "gateways"})
		inSystem := append(slices.Clone(clusterWide), groupResource{"", "secrets"}, groupResource{"", "configmaps"})

		for _, gr := range clusterWide {
			as.mustListAndWatch(t, gr, "")
		}
		for _, gr := range []groupResource{{"", "secrets"}, {"", "configmaps"}} {
			as.mustListAndWatch(t, gr, systemNamespace)
			as.mustBeForbidden(t, "list", gr, "")
			as.mustBeForbidden(t, "list", gr, "default")
			as.mustBeForbidden(t, "list", gr, "kube-system")
			as.mustBeForbidden(t, "create", gr, systemNamespace)
		}
		for _, gr := range clusterWide {
			as.mustBeForbidden(t, "create", gr, "default")
		}
		reviews := []grant{
			{groupResource{"authentication.k8s.io", "tokenreviews"}, []string{"create"}},
			{groupResource{"authorization.k8s.io", "subjectaccessreviews"}, []string{"create"}},
			serviceExports,
		}
		as.mustHaveExactly(t, systemNamespace, inSystem, read, reviews...)
		as.mustHaveExactly(t, "default", clusterWide, read, reviews...)
	})
	t.Run("debug access", func(t *testing.T) {
		applyExample(t, config, "horizon.yaml")
		testDebugAccessRBAC(t)
	})
	t.Run("reader in the remote cluster", func(t *testing.T) {
		applyExample(t, remote, "remote-reader.yaml")
		as := impersonate(t, remote, systemNamespace, readerSA)
		for _, gr := range endpointSources {
			as.mustListAndWatch(t, gr, "")
			as.mustBeForbidden(t, "create", gr, systemNamespace)
		}
		for _, gr := range []groupResource{{"", "secrets"}, {"", "configmaps"}} {
			for _, ns := range []string{systemNamespace, "default", ""} {
				as.mustBeForbidden(t, "list", gr, ns)
			}
		}
		as.mustBeForbidden(t, "list", groupResource{"networking.istio.io", "gateways"}, "")
		as.mustHaveExactly(t, systemNamespace, endpointSources, read, serviceExports)
		as.mustHaveExactly(t, "default", endpointSources, read, serviceExports)
	})
	// The opt-in rule for --mcs-export-status adds patch on serviceexports/status
	// to each identity, and nothing else.
	exportStatus := grant{groupResource{"multicluster.x-k8s.io", "serviceexports/status"}, []string{"patch"}}
	t.Run("export status in the config cluster", func(t *testing.T) {
		applyExample(t, config, "gateway-crd.yaml")
		applyExample(t, config, "horizon.yaml")
		applyExample(t, config, "mcs-export-status-rbac.yaml")
		as := impersonate(t, config, systemNamespace, horizonSA)
		as.waitExportStatus(t)
		clusterWide := append(slices.Clone(endpointSources), groupResource{"networking.istio.io", "gateways"})
		as.mustHaveExactly(t, "default", clusterWide, read,
			grant{groupResource{"authentication.k8s.io", "tokenreviews"}, []string{"create"}},
			grant{groupResource{"authorization.k8s.io", "subjectaccessreviews"}, []string{"create"}},
			serviceExports, exportStatus)
	})
	t.Run("export status in the remote cluster", func(t *testing.T) {
		applyExample(t, remote, "remote-reader.yaml")
		applyExample(t, remote, "mcs-export-status-rbac.yaml")
		as := impersonate(t, remote, systemNamespace, readerSA)
		as.waitExportStatus(t)
		as.mustHaveExactly(t, "default", endpointSources, read, serviceExports, exportStatus)
	})
}

// waitExportStatus waits until the API server's authorizer, whose view of RBAC
// objects follows them asynchronously, lets id patch serviceexports/status.
func (id *identity) waitExportStatus(t *testing.T) {
	t.Helper()
	kubetest.Eventually(t, 10*time.Second, func() error {
		r, err := id.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(t.Context(), &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: "default", Verb: "patch", Group: "multicluster.x-k8s.io", Resource: "serviceexports", Subresource: "status",
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if !r.Status.Allowed {
			return fmt.Errorf("%s may not patch serviceexports/status yet", id.name)
		}
		return nil
	})
}

// TestExamplesRemoteReaderMatchesCreateRemoteSecret runs `horizon create-remote-secret`
// against a cluster where remote-reader.yaml is applied: it must find every object in
// place and change nothing (it resets a ClusterRole whose rules differ, and creates
// objects it does not find under its names), and its Secret's token must be the
// reader's.
func TestExamplesRemoteReaderMatchesCreateRemoteSecret(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	bin := filepath.Join(dir, "horizon")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/horizon")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build horizon: %v\n%s", err, out)
	}
	applyExample(t, remote, "remote-reader.yaml")
	kc, err := remote.Kubeconfig(remote.Config.BearerToken)
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(dir, "remote.kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}

	before := readerObjects(t, remote)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "create-remote-secret", "--kubeconfig", kcPath, "--name", "cluster2", "--token-wait", "0s")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("create-remote-secret: %v\n%s", err, stderr.String())
	}
	after := readerObjects(t, remote)
	for k, v := range after {
		if before[k] != v {
			t.Errorf("create-remote-secret changed or created %s: examples/remote-reader.yaml does not match what it creates", k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("%s disappeared", k)
		}
	}

	var secret corev1.Secret
	if err := yaml.UnmarshalStrict(stdout.Bytes(), &secret); err != nil {
		t.Fatalf("create-remote-secret output: %v\n%s", err, stdout.String())
	}
	if secret.Namespace != systemNamespace || secret.Labels[network.LabelMultiCluster] != "true" || secret.StringData["cluster2"] == "" {
		t.Fatalf("create-remote-secret printed %s/%s labels %v keys %v, want a labelled Secret in %s with key cluster2",
			secret.Namespace, secret.Name, secret.Labels, slices.Sorted(maps.Keys(secret.StringData)), systemNamespace)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(secret.StringData["cluster2"]))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	who, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := who.Status.UserInfo.Username, serviceAccountUser(systemNamespace, readerSA); got != want {
		t.Errorf("the remote Secret authenticates as %q, want %q", got, want)
	}
}

type groupResource struct{ group, resource string }

func (gr groupResource) String() string {
	if gr.group == "" {
		return gr.resource
	}
	return gr.resource + "." + gr.group
}

// identity is a client acting as a service account, through impersonation by a
// cluster administrator.
type identity struct {
	name string
	cfg  *rest.Config
	cs   kubernetes.Interface
	dyn  dynamic.Interface
	gvr  func(groupResource) schema.GroupVersionResource
}

func serviceAccountUser(ns, name string) string { return "system:serviceaccount:" + ns + ":" + name }

// impersonate returns a client of c acting as service account ns/name, with the
// groups a real token of that account carries.
func impersonate(t *testing.T, c *kubetest.Cluster, ns, name string) *identity {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: serviceAccountUser(ns, name),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{"": "v1", "discovery.k8s.io": "v1", "networking.istio.io": "v1"}
	return &identity{name: ns + "/" + name, cfg: cfg, cs: cs, dyn: dyn, gvr: func(gr groupResource) schema.GroupVersionResource {
		return schema.GroupVersionResource{Group: gr.group, Version: versions[gr.group], Resource: gr.resource}
	}}
}

func where(ns string) string {
	if ns == "" {
		return "cluster-wide"
	}
	return "in " + ns
}

// mustListAndWatch lists and watches gr in ns ("" for every namespace), as an
// informer does.
func (id *identity) mustListAndWatch(t *testing.T, gr groupResource, ns string) {
	t.Helper()
	ri := id.dyn.Resource(id.gvr(gr)).Namespace(ns)
	if _, err := ri.List(t.Context(), metav1.ListOptions{Limit: 1}); err != nil {
		t.Errorf("%s cannot list %s %s: %v", id.name, gr, where(ns), err)
		return
	}
	timeout := int64(1)
	w, err := ri.Watch(t.Context(), metav1.ListOptions{TimeoutSeconds: &timeout})
	if err != nil {
		t.Errorf("%s cannot watch %s %s: %v", id.name, gr, where(ns), err)
		return
	}
	w.Stop()
}

// kinds of the resources used here.
var kinds = map[string]string{
	"services": "Service", "pods": "Pod", "nodes": "Node", "namespaces": "Namespace", "endpointslices": "EndpointSlice",
	"gateways": "Gateway", "secrets": "Secret", "configmaps": "ConfigMap",
}

// clusterScoped are the resources used here that belong to no namespace.
var clusterScoped = map[groupResource]bool{{"", "nodes"}: true, {"", "namespaces"}: true}

// mustBeForbidden tries verb ("list" or "create", the latter as a dry run) on gr in
// ns ("" for every namespace; ignored for cluster-scoped resources) and wants it
// refused.
func (id *identity) mustBeForbidden(t *testing.T, verb string, gr groupResource, ns string) {
	t.Helper()
	if clusterScoped[gr] {
		ns = ""
	}
	ri := id.dyn.Resource(id.gvr(gr)).Namespace(ns)
	var err error
	switch verb {
	case "list":
		_, err = ri.List(t.Context(), metav1.ListOptions{Limit: 1})
	case "create":
		// A refused request is never decoded; one let through fails the test whatever
		// its body.
		gvr := id.gvr(gr)
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": schema.GroupVersion{Group: gvr.Group, Version: gvr.Version}.String(),
			"kind":       kinds[gr.resource],
			"metadata":   map[string]any{"name": "examples-rbac-probe"},
		}}
		if ns != "" {
			obj.SetNamespace(ns)
		}
		_, err = ri.Create(t.Context(), obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	default:
		t.Fatalf("unknown verb %s", verb)
	}
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s %s %s %s: got %v, want forbidden", id.name, verb, gr, where(ns), err)
	}
}

// selfReviewResources may be created by every authenticated user (the cluster's
// default system:basic-user role): asking what one may do is not a permission to
// grant or to refuse.
var selfReviewResources = []string{"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}

// grant is verbs on a resource.
type grant struct {
	gr    groupResource
	verbs []string
}

// serviceExports is what Horizon and the reader may do with ServiceExports: read
// them in MCS mode.
var serviceExports = grant{groupResource{"multicluster.x-k8s.io", "serviceexports"}, []string{"list", "watch"}}

// mustHaveExactly asks the API server for every permission the identity has in ns
// and wants exactly verbs on exactly resources, and the grants more, besides asking
// about itself.
func (id *identity) mustHaveExactly(t *testing.T, ns string, resources []groupResource, verbs []string, more ...grant) {
	t.Helper()
	rr, err := id.cs.AuthorizationV1().SelfSubjectRulesReviews().Create(t.Context(), &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Status.Incomplete {
		t.Fatalf("rules review for %s in %s incomplete: %s", id.name, ns, rr.Status.EvaluationError)
	}
	got := map[string][]string{} // group/resource → verbs
	for _, r := range rr.Status.ResourceRules {
		if slices.Equal(r.Verbs, []string{"create"}) && allIn(r.Resources, selfReviewResources) &&
			allIn(r.APIGroups, []string{authorizationv1.GroupName, authenticationv1.GroupName}) {
			continue
		}
		if len(r.ResourceNames) > 0 {
			t.Errorf("%s in %s: unexpected rule limited to names %v: %+v", id.name, ns, r.ResourceNames, r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := groupResource{g, res}.String()
				got[k] = append(got[k], r.Verbs...)
			}
		}
	}
	want := map[string][]string{}
	for _, gr := range resources {
		want[gr.String()] = slices.Clone(verbs)
	}
	for _, g := range more {
		want[g.gr.String()] = slices.Clone(g.verbs)
	}
	for k, v := range got {
		sort.Strings(v)
		got[k] = slices.Compact(v)
	}
	for k := range want {
		sort.Strings(want[k])
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s may, in %s:\n  %v\nwant exactly:\n  %v", id.name, ns, got, want)
	}
}

func allIn(items, set []string) bool {
	for _, i := range items {
		if !slices.Contains(set, i) {
			return false
		}
	}
	return len(items) > 0
}

// readerObjects returns the identity of every object create-remote-secret may create
// or change in c: kind/namespace/name → resourceVersion.
func readerObjects(t *testing.T, c *kubetest.Cluster) map[string]string {
	t.Helper()
	ctx := t.Context()
	out := map[string]string{}
	add := func(kind string, items []metav1.Object) {
		for _, o := range items {
			out[kind+"/"+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
		}
	}
	nss, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("Namespace", objectsOf(nss.Items))
	sas, err := c.Client.CoreV1().ServiceAccounts(systemNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("ServiceAccount", objectsOf(sas.Items))
	secrets, err := c.Client.CoreV1().Secrets(systemNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("Secret", objectsOf(secrets.Items))
	roles, err := c.Client.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("ClusterRole", objectsOf(roles.Items))
	bindings, err := c.Client.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("ClusterRoleBinding", objectsOf(bindings.Items))
	return out
}

func objectsOf[T any, PT interface {
	*T
	metav1.Object
}](items []T) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = PT(&items[i])
	}
	return out
}
