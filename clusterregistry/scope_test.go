package clusterregistry_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

func mustSelectors(t *testing.T, value string) *network.DiscoverySelectors {
	t.Helper()
	sel, err := network.ParseDiscoverySelectors(value)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

// apiCounts counts what the API server holds in namespaces: what the caches of a
// cluster watching exactly those namespaces must hold.
func apiCounts(ctx context.Context, t *testing.T, cs kubernetes.Interface, namespaces ...string) (svcs, slices, pods int) {
	t.Helper()
	for _, ns := range namespaces {
		s, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svcs, slices, pods = svcs+len(s.Items), slices+len(e.Items), pods+len(p.Items)
	}
	return svcs, slices, pods
}

func scopeOf(r *clusterregistry.Registry, id network.ClusterID) clusterregistry.ScopeStatus {
	for _, st := range r.Clusters() {
		if st.ID == id {
			return st.Scope
		}
	}
	return clusterregistry.ScopeStatus{}
}

// wantCached waits until the cluster's caches hold exactly what the API server has in
// namespaces, watched one by one.
func wantCached(t *testing.T, r *clusterregistry.Registry, namespaces ...string) {
	t.Helper()
	ctx := t.Context()
	kubetest.Eventually(t, 20*time.Second, func() error {
		svcs, slices, pods := apiCounts(ctx, t, cluster.Client, namespaces...)
		sc := scopeOf(r, "c1")
		if sc.NamespaceWatches != len(namespaces) || sc.CachedServices != svcs || sc.CachedEndpointSlices != slices || sc.CachedPods != pods {
			return fmt.Errorf("scope %+v, want %d namespace watches and %d services, %d slices, %d pods cached (those of %v)",
				sc, len(namespaces), svcs, slices, pods, namespaces)
		}
		return nil
	})
}

func TestDiscoverySelectorsScopeWatches(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Client
	const (
		selNS   = "ds-selected"
		otherNS = "ds-other"
		label   = "horizon-test/discovery"
	)
	for _, ns := range []string{selNS, otherNS} {
		if err := kubetest.EnsureNamespace(ctx, cs, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	setLabel := func(ns, value string) {
		t.Helper()
		n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		if value == "" {
			delete(n.Labels, label)
		} else {
			n.Labels[label] = value
		}
		if _, err := cs.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setLabel(selNS, "a")
	setLabel(otherNS, "")
	t.Cleanup(func() {
		for _, ns := range []string{selNS, otherNS} {
			if n, err := cs.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{}); err == nil {
				delete(n.Labels, label)
				_, _ = cs.CoreV1().Namespaces().Update(context.Background(), n, metav1.UpdateOptions{})
			}
		}
	})
	for i, ns := range []string{selNS, otherNS} {
		svc := kubetest.Service{
			Namespace: ns, Name: "web",
			Ports:    []corev1.ServicePort{httpPort(80, 8080)},
			Backends: []kubetest.Backend{{Pod: "web-1", IP: fmt.Sprintf("10.7.%d.1", i), Ready: true}},
		}
		if err := kubetest.Deploy(ctx, cs, svc); err != nil {
			t.Fatal(err)
		}
	}
	const (
		selHost   = "web." + selNS + ".svc.cluster.local"
		otherHost = "web." + otherNS + ".svc.cluster.local"
	)

	r := newRegistry(t, 0)
	var mu sync.Mutex
	changes := map[string]int{}
	r.Subscribe(func(c clusterregistry.Change) {
		mu.Lock()
		changes[c.Host]++
		mu.Unlock()
	})
	changesOf := func(host string) int {
		mu.Lock()
		defer mu.Unlock()
		return changes[host]
	}
	r.SetDiscoverySelectors(mustSelectors(t, `[{matchLabels: {`+label+`: a}}]`))
	r.SetCluster("c1", "test", cluster.Config)
	waitSynced(t, r, "c1")

	// Only the selected namespace (and the system namespace) is listed and cached.
	if len(r.Endpoints(selHost, 80)["c1"]) != 1 {
		t.Errorf("selected namespace's service: endpoints %+v, want 1", r.Endpoints(selHost, 80))
	}
	if s := r.Services(otherHost); len(s) != 0 {
		t.Errorf("unselected namespace's service served: %+v", s)
	}
	wantCached(t, r, selNS, "istio-system")
	if sc := scopeOf(r, "c1"); sc.Selectors != label+"=a" || sc.Override {
		t.Errorf("scope = %+v, want selectors %s=a from the mesh", sc, label)
	}

	// Labelling the other namespace selects it: its service arrives, pushed.
	setLabel(otherNS, "a")
	kubetest.Eventually(t, 20*time.Second, func() error {
		if len(r.Endpoints(otherHost, 80)["c1"]) != 1 || changesOf(otherHost) == 0 {
			return fmt.Errorf("newly selected service: %+v, %d changes", r.Endpoints(otherHost, 80), changesOf(otherHost))
		}
		return nil
	})
	wantCached(t, r, selNS, otherNS, "istio-system")

	// A selector edit that no longer matches the first namespace withdraws its
	// service, pushed, and stops its watches.
	before := changesOf(selHost)
	r.SetDiscoverySelectors(mustSelectors(t, `[{matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [`+otherNS+`]}]}]`))
	kubetest.Eventually(t, 20*time.Second, func() error {
		if s := r.Services(selHost); len(s) != 0 || changesOf(selHost) == before {
			return fmt.Errorf("unselected service still served: %+v, %d changes", s, changesOf(selHost))
		}
		return nil
	})
	if len(r.Endpoints(otherHost, 80)["c1"]) != 1 {
		t.Errorf("still selected service lost: %+v", r.Endpoints(otherHost, 80))
	}
	wantCached(t, r, otherNS, "istio-system")

	// The cluster's own override (every namespace) replaces the mesh's selectors:
	// one cluster-wide watch, both services served.
	r.SetClusterDiscoverySelectors("c1", mustSelectors(t, `[]`), true)
	kubetest.Eventually(t, 20*time.Second, func() error {
		sc := scopeOf(r, "c1")
		if len(r.Endpoints(selHost, 80)["c1"]) != 1 || len(r.Endpoints(otherHost, 80)["c1"]) != 1 || sc.NamespaceWatches != 0 || !sc.Override || sc.Selectors != "*" {
			return fmt.Errorf("override to every namespace: scope %+v, services %v %v", sc, r.Services(selHost), r.Services(otherHost))
		}
		return nil
	})

	// Dropping the override restores the mesh's selectors.
	r.SetClusterDiscoverySelectors("c1", nil, false)
	kubetest.Eventually(t, 20*time.Second, func() error {
		if s := r.Services(selHost); len(s) != 0 {
			return fmt.Errorf("mesh selectors not back: %+v", s)
		}
		return nil
	})
	wantCached(t, r, otherNS, "istio-system")
}

// Past MaxNamespaceWatches selected namespaces, the cluster is watched cluster-wide
// and unselected namespaces' services are still not served; a namespace that becomes
// selected is served, one that no longer is withdrawn.
func TestDiscoverySelectorsPastMaxNamespaceWatches(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Client
	const label = "horizon-test/discovery-max"
	nss := []string{"dsmax-a", "dsmax-b"}
	for i, ns := range nss {
		if err := kubetest.EnsureNamespace(ctx, cs, ns, nil); err != nil {
			t.Fatal(err)
		}
		svc := kubetest.Service{
			Namespace: ns, Name: "web",
			Ports:    []corev1.ServicePort{httpPort(80, 8080)},
			Backends: []kubetest.Backend{{Pod: "web-1", IP: fmt.Sprintf("10.8.%d.1", i), Ready: true}},
		}
		if err := kubetest.Deploy(ctx, cs, svc); err != nil {
			t.Fatal(err)
		}
	}
	setLabel := func(ns string, on bool) {
		t.Helper()
		n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		if on {
			n.Labels[label] = "on"
		} else {
			delete(n.Labels, label)
		}
		if _, err := cs.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setLabel(nss[0], true)
	setLabel(nss[1], false)
	t.Cleanup(func() {
		for _, ns := range nss {
			if n, err := cs.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{}); err == nil {
				delete(n.Labels, label)
				_, _ = cs.CoreV1().Namespaces().Update(context.Background(), n, metav1.UpdateOptions{})
			}
		}
	})

	r, err := clusterregistry.New(clusterregistry.Options{
		DomainSuffix: "cluster.local", Namespace: "istio-system", MaxNamespaceWatches: 1,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	r.SetDiscoverySelectors(mustSelectors(t, `[{matchLabels: {`+label+`: "on"}}]`))
	r.SetCluster("c1", "test", cluster.Config)
	waitSynced(t, r, "c1")

	served := func(ns string) bool { return len(r.Endpoints("web."+ns+".svc.cluster.local", 80)["c1"]) == 1 }
	if !served(nss[0]) || served(nss[1]) {
		t.Errorf("served %v %v, want only %s", served(nss[0]), served(nss[1]), nss[0])
	}
	// Two namespaces selected (dsmax-a and the system namespace), over the bound of 1.
	if sc := scopeOf(r, "c1"); sc.NamespaceWatches != 0 {
		t.Errorf("scope %+v, want cluster-wide watches", sc)
	}
	setLabel(nss[1], true)
	setLabel(nss[0], false)
	kubetest.Eventually(t, 20*time.Second, func() error {
		if served(nss[0]) || !served(nss[1]) {
			return fmt.Errorf("after relabelling: served %v %v, want only %s", served(nss[0]), served(nss[1]), nss[1])
		}
		return nil
	})
}

// TestDiscoveryScopeChangeNotHeldByForbiddenNamespace: a selector edit that selects a
// namespace whose objects Horizon may not list leaves that namespace's watches
// unsynced for good. A later edit is still brought in line: its namespace is
// served and the one no longer selected withdrawn.
func TestDiscoveryScopeChangeNotHeldByForbiddenNamespace(t *testing.T) {
	ctx := t.Context()
	cs := cluster.Client
	const (
		open, locked, later = "dsfb-open", "dsfb-locked", "dsfb-later"
		user                = "dsfb-reader"
	)
	if err := kubetest.EnsureNamespace(ctx, cs, "istio-system", nil); err != nil {
		t.Fatal(err)
	}
	for i, ns := range []string{open, locked, later} {
		if err := kubetest.EnsureNamespace(ctx, cs, ns, nil); err != nil {
			t.Fatal(err)
		}
		svc := kubetest.Service{
			Namespace: ns, Name: "web",
			Ports:    []corev1.ServicePort{httpPort(80, 8080)},
			Backends: []kubetest.Backend{{Pod: "web-1", IP: fmt.Sprintf("10.9.%d.1", i), Ready: true}},
		}
		if err := kubetest.Deploy(ctx, cs, svc); err != nil {
			t.Fatal(err)
		}
	}
	// The reader may read nodes and namespaces everywhere, and services, slices and
	// pods everywhere but in the locked namespace.
	read := []string{"get", "list", "watch"}
	roles := []rbacv1.ClusterRole{
		{ObjectMeta: metav1.ObjectMeta{Name: "dsfb-cluster"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes", "namespaces"}, Verbs: read}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "dsfb-namespaced"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "pods"}, Verbs: read},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
		}},
	}
	for i := range roles {
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &roles[i], metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "dsfb-cluster"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "dsfb-cluster"},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, ns := range []string{"istio-system", open, later} {
		if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "dsfb-namespaced"}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "dsfb-namespaced"},
		}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}

	r := newRegistry(t, 0)
	byName := func(names ...string) *network.DiscoverySelectors {
		return mustSelectors(t, `[{matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [`+strings.Join(names, ", ")+`]}]}]`)
	}
	served := func(ns string) bool { return len(r.Endpoints("web."+ns+".svc.cluster.local", 80)["c1"]) == 1 }
	r.SetDiscoverySelectors(byName(open))
	r.SetCluster("c1", "test", cfg)
	waitSynced(t, r, "c1")
	if !served(open) {
		t.Fatalf("%s not served with the reader's access", open)
	}

	// The locked namespace's watches cannot sync.
	r.SetDiscoverySelectors(byName(open, locked))
	kubetest.Eventually(t, 20*time.Second, func() error {
		if sc := scopeOf(r, "c1"); sc.NamespaceWatches != 3 {
			return fmt.Errorf("scope %+v, want 3 namespace watches (istio-system, %s, %s)", sc, open, locked)
		}
		return nil
	})
	// A later edit is applied all the same, well before the scope change's limit.
	r.SetDiscoverySelectors(byName(later))
	kubetest.Eventually(t, 20*time.Second, func() error {
		if !served(later) || served(open) || served(locked) {
			return fmt.Errorf("served: %s %v, %s %v, %s %v; want only %s", open, served(open), locked, served(locked), later, served(later), later)
		}
		return nil
	})
}
