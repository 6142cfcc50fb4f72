package app_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/secrets"
)

// putConfigMap creates or replaces ConfigMap ns/name with data, and deletes it when
// the test ends.
func putConfigMap(t *testing.T, ns, name string, data map[string]string) {
	t.Helper()
	ctx := t.Context()
	cms := cluster.Client.CoreV1().ConfigMaps(ns)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}
	if cur, err := cms.Get(ctx, name, metav1.GetOptions{}); err == nil {
		cm.ResourceVersion = cur.ResourceVersion
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cluster.Client.CoreV1().ConfigMaps(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// annotateSecret sets the discovery selectors annotation of Secret ns/name.
func annotateSecret(t *testing.T, ns, name, value string) {
	t.Helper()
	secretsClient := cluster.Client.CoreV1().Secrets(ns)
	s, err := secretsClient.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[network.AnnotationDiscoverySelectors] = value
	if _, err := secretsClient.Update(t.Context(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestDiscoverySelectorsEndToEnd runs Horizon with discoverySelectors in the mesh key
// of ConfigMap istio and a remote cluster whose Secret overrides them.
func TestDiscoverySelectorsEndToEnd(t *testing.T) {
	ctx := t.Context()
	const (
		sys   = "dsapp-system"
		nsA   = "dsapp-a"
		nsB   = "dsapp-b"
		hostA = "web." + nsA + ".svc.cluster.local"
		hostB = "web." + nsB + ".svc.cluster.local"
	)
	if err := kubetest.EnsureNamespace(ctx, cluster.Client, nsA, map[string]string{"horizon-test/app-ds": "a"}); err != nil {
		t.Fatal(err)
	}
	for i, ns := range []string{nsA, nsB} {
		svc := kubetest.Service{
			Namespace: ns, Name: "web",
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
			Backends: []kubetest.Backend{{Pod: "web-1", IP: fmt.Sprintf("10.9.%d.1", i), Ready: true}},
		}
		if err := kubetest.Deploy(ctx, cluster.Client, svc); err != nil {
			t.Fatal(err)
		}
	}
	if err := kubetest.EnsureNamespace(ctx, cluster.Client, sys, nil); err != nil {
		t.Fatal(err)
	}
	putConfigMap(t, sys, "istio", map[string]string{"mesh": "discoverySelectors:\n- matchLabels: {horizon-test/app-ds: a}\n"})
	good, _, err := cluster.MintKubeconfig(ctx, "dsapp-test", "reader")
	if err != nil {
		t.Fatal(err)
	}
	putSecret(t, sys, "ds-remote", map[string][]byte{"remote1": good})
	annotateSecret(t, sys, "ds-remote", "[{matchLabels: {kubernetes.io/metadata.name: "+nsB+"}}]")

	opts := testOptions()
	opts.Secrets.Namespace = sys
	h := runHorizon(t, opts, cluster.Config)
	serves := func(id network.ClusterID, host string) bool { return h.Registry().Services(host)[id] != nil }
	kubetest.Eventually(t, 30*time.Second, func() error {
		if err := h.Ready(); err != nil {
			return err
		}
		if !serves("config", hostA) || serves("config", hostB) || !serves("remote1", hostB) || serves("remote1", hostA) {
			return fmt.Errorf("config serves a %v b %v, remote1 serves a %v b %v; want config a, remote1 b",
				serves("config", hostA), serves("config", hostB), serves("remote1", hostA), serves("remote1", hostB))
		}
		return nil
	})
	if st, _ := clusterStatus(h, "config"); st.Scope.Override || st.Scope.NamespaceWatches != 2 || st.Scope.CachedServices != 1 {
		t.Errorf("config cluster scope %+v, want the mesh's selectors, 2 namespace watches (%s and %s), 1 service cached", st.Scope, nsA, sys)
	}
	if st, _ := clusterStatus(h, "remote1"); !st.Scope.Override || st.Scope.Selectors != "kubernetes.io/metadata.name="+nsB {
		t.Errorf("remote1 scope %+v, want its Secret's selectors", st.Scope)
	}

	// An invalid mesh config is rejected with the field's path; the last good one
	// stays in force.
	putConfigMap(t, sys, "istio", map[string]string{"mesh": "discoverySelectors:\n- matchExpressions: [{key: team, operator: Near}]\n"})
	kubetest.Eventually(t, 10*time.Second, func() error {
		if r := h.MeshConfig().Status().Rejected; !strings.Contains(r, "discoverySelectors[0].matchExpressions[0].operator") {
			return fmt.Errorf("mesh config rejection %q", r)
		}
		return nil
	})
	if !serves("config", hostA) || serves("config", hostB) {
		t.Error("the config cluster's scope changed after an invalid mesh config")
	}

	// A valid edit moves the config cluster's scope, live; remote1 keeps its own.
	putConfigMap(t, sys, "istio", map[string]string{"mesh": "discoverySelectors:\n- matchLabels: {kubernetes.io/metadata.name: " + nsB + "}\n"})
	kubetest.Eventually(t, 20*time.Second, func() error {
		if serves("config", hostA) || !serves("config", hostB) || !serves("remote1", hostB) || serves("remote1", hostA) {
			return fmt.Errorf("after the edit: config serves a %v b %v, remote1 serves a %v b %v; want config b, remote1 b",
				serves("config", hostA), serves("config", hostB), serves("remote1", hostA), serves("remote1", hostB))
		}
		return nil
	})

	// An invalid annotation refuses the Secret, naming the field; remote1 keeps its
	// selectors. A valid one (every namespace) applies.
	annotateSecret(t, sys, "ds-remote", "- matchExpressions: [{key: team, operator: Near}]")
	kubetest.Eventually(t, 10*time.Second, func() error {
		for _, st := range h.Secrets().Status() {
			if st.Secret == sys+"/ds-remote" && st.State == secrets.KeyInvalidSelectors &&
				strings.Contains(st.Error, "metadata.annotations[horizon.io/discovery-selectors][0].matchExpressions[0].operator") {
				return nil
			}
		}
		return fmt.Errorf("secret status %+v", h.Secrets().Status())
	})
	if !serves("remote1", hostB) || serves("remote1", hostA) {
		t.Error("remote1's scope changed after an invalid annotation")
	}
	annotateSecret(t, sys, "ds-remote", "[]")
	kubetest.Eventually(t, 20*time.Second, func() error {
		if !serves("remote1", hostA) || !serves("remote1", hostB) || keyState(h, sys+"/ds-remote", "remote1") != secrets.KeyAccepted {
			return fmt.Errorf("remote1 with every namespace: serves a %v b %v, key %s", serves("remote1", hostA), serves("remote1", hostB),
				keyState(h, sys+"/ds-remote", "remote1"))
		}
		return nil
	})
}
