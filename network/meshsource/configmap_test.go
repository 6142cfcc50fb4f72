package meshsource_test

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network/meshsource"
)

// ownClient returns a clientset with its own HTTP client, whose idle connections are
// closed when the test ends so that the leak check sees only the source's goroutines.
func ownClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	hc, err := rest.HTTPClientFor(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.CloseIdleConnections)
	cs, err := kubernetes.NewForConfigAndClient(cluster.Config, hc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// putConfigMap creates or replaces ConfigMap ns/name with data.
func putConfigMap(t *testing.T, ns, name string, data map[string]string) {
	t.Helper()
	cms := cluster.Client.CoreV1().ConfigMaps(ns)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}
	if cur, err := cms.Get(t.Context(), name, metav1.GetOptions{}); err == nil {
		cm.ResourceVersion = cur.ResourceVersion
		if _, err := cms.Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := cms.Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestConfigMapSource(t *testing.T) {
	checkLeaks(t)
	const ns, other = "meshsource-cm", "meshsource-cm-other"
	for _, n := range []string{ns, other} {
		if err := kubetest.EnsureNamespace(t.Context(), cluster.Client, n, nil); err != nil {
			t.Fatal(err)
		}
	}
	h := start(t, meshsource.Options{Client: ownClient(t), Namespace: ns})
	if st := h.src.Status(); st.Source != "configmap meshsource-cm/istio key meshNetworks" {
		t.Errorf("status source %q", st.Source)
	}

	// No ConfigMap: an empty configuration, delivered as the first one.
	h.waitApplied(t, 1)

	putConfigMap(t, ns, "istio", map[string]string{"mesh": "defaultConfig: {}\n", "meshNetworks": configA})
	h.waitApplied(t, 2, "network1", "network2")

	putConfigMap(t, ns, "istio", map[string]string{"mesh": "defaultConfig: {}\n", "meshNetworks": configB})
	h.waitApplied(t, 3, "network1", "network3")

	// An invalid edit is kept out; the last good configuration stays.
	putConfigMap(t, ns, "istio", map[string]string{"mesh": "defaultConfig: {}\n", "meshNetworks": configBad})
	h.waitRejected(t, configBadError, 3, "network1", "network3")

	// Other ConfigMaps, and an istio ConfigMap in another namespace, are not watched.
	// Neither is an edit of another key of the istio ConfigMap; then the fix is
	// accepted.
	putConfigMap(t, ns, "istio-sidecar-injector", map[string]string{"meshNetworks": configA})
	putConfigMap(t, other, "istio", map[string]string{"meshNetworks": configA})
	putConfigMap(t, ns, "istio", map[string]string{"mesh": "defaultConfig: {}\nenableTracing: false\n", "meshNetworks": configBad})
	putConfigMap(t, ns, "istio", map[string]string{"mesh": "defaultConfig: {}\n", "meshNetworks": configC})
	h.waitApplied(t, 4, "network4")

	// Removing the key empties the configuration; so does deleting the ConfigMap.
	putConfigMap(t, ns, "istio", map[string]string{"mesh": "defaultConfig: {}\n"})
	h.waitApplied(t, 5)
	putConfigMap(t, ns, "istio", map[string]string{"meshNetworks": configA})
	h.waitApplied(t, 6, "network1", "network2")
	if err := cluster.Client.CoreV1().ConfigMaps(ns).Delete(t.Context(), "istio", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitApplied(t, 7)
	if st := h.src.Status(); st.LastApplied.IsZero() || time.Since(st.LastApplied) > time.Minute {
		t.Errorf("last applied %v", st.LastApplied)
	}
}

// A ConfigMap that already exists when the source starts is its first configuration,
// and HasSynced waits for it.
func TestConfigMapSourceExistingAtStart(t *testing.T) {
	checkLeaks(t)
	const ns = "meshsource-cm-existing"
	if err := kubetest.EnsureNamespace(t.Context(), cluster.Client, ns, nil); err != nil {
		t.Fatal(err)
	}
	putConfigMap(t, ns, "istio", map[string]string{"meshNetworks": configA})
	h := start(t, meshsource.Options{Client: ownClient(t), Namespace: ns})
	// start returned once synced: the configuration must already be in force.
	if got := fmt.Sprint(h.src.Current().Names()); got != "[network1 network2]" {
		t.Fatalf("networks right after sync: %s", got)
	}
	h.waitApplied(t, 1, "network1", "network2")
}
