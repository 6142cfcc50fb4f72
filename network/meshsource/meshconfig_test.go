package meshsource_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/meshsource"
)

// meshHarness runs a MeshConfigSource until the test ends and records the selectors
// of each configuration it delivers.
type meshHarness struct {
	src  *meshsource.MeshConfigSource
	logs *kubetest.LogBuffer

	mu      sync.Mutex
	changes []string // guarded by mu
}

func startMeshConfig(t *testing.T, opts meshsource.MeshConfigOptions) *meshHarness {
	t.Helper()
	h := &meshHarness{logs: &kubetest.LogBuffer{}}
	opts.Logger = slog.New(slog.NewTextHandler(h.logs, nil))
	opts.OnChange = func(mc *network.MeshConfig) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.changes = append(h.changes, mc.DiscoverySelectors.String())
	}
	opts.Debounce = 10 * time.Millisecond
	src, err := meshsource.NewMeshConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.src = src
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("source logs:\n%s", h.logs.String())
		}
	})
	kubetest.Eventually(t, 10*time.Second, func() error {
		if !src.HasSynced() {
			return fmt.Errorf("source not synced")
		}
		return nil
	})
	return h
}

// waitSelectors waits until generation gen is in force with selectors want, and was
// delivered to OnChange.
func (h *meshHarness) waitSelectors(t *testing.T, gen int, want string) {
	t.Helper()
	kubetest.Eventually(t, 10*time.Second, func() error {
		st := h.src.Status()
		got := h.src.Current().DiscoverySelectors.String()
		h.mu.Lock()
		n := len(h.changes)
		h.mu.Unlock()
		if st.Generation != gen || got != want || n != gen || st.Rejected != "" {
			return fmt.Errorf("generation %d (want %d), selectors %q (want %q), %d changes, rejected %q", st.Generation, gen, got, want, n, st.Rejected)
		}
		return nil
	})
}

// waitRejected waits until an edit is rejected with an error containing wantErr while
// generation gen, with selectors want, stays in force.
func (h *meshHarness) waitRejected(t *testing.T, wantErr string, gen int, want string) {
	t.Helper()
	kubetest.Eventually(t, 10*time.Second, func() error {
		st := h.src.Status()
		if !strings.Contains(st.Rejected, wantErr) {
			return fmt.Errorf("rejected %q, want it to contain %q", st.Rejected, wantErr)
		}
		if got := h.src.Current().DiscoverySelectors.String(); st.Generation != gen || got != want {
			return fmt.Errorf("after the rejection: generation %d, selectors %q; want %d, %q", st.Generation, got, gen, want)
		}
		return nil
	})
}

const (
	meshSelA = `
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
discoverySelectors:
- matchLabels:
    env: prod
- matchExpressions:
  - key: team
    operator: In
    values: [a, b]
`
	meshSelB = `
discoverySelectors:
- matchLabels: {env: staging}
`
	meshSelBad = `
discoverySelectors:
- matchLabels: {env: prod}
- matchExpressions:
  - key: team
    operator: Near
`
	meshSelBadError = "discoverySelectors[1].matchExpressions[0].operator"
)

func TestMeshConfigFromConfigMap(t *testing.T) {
	checkLeaks(t)
	const ns = "meshconfig-cm"
	if err := kubetest.EnsureNamespace(t.Context(), cluster.Client, ns, nil); err != nil {
		t.Fatal(err)
	}
	h := startMeshConfig(t, meshsource.MeshConfigOptions{Client: ownClient(t), Namespace: ns})
	if st := h.src.Status(); st.Source != "configmap meshconfig-cm/istio key mesh" {
		t.Errorf("status source %q", st.Source)
	}
	// No ConfigMap: every namespace.
	h.waitSelectors(t, 1, "*")

	putConfigMap(t, ns, "istio", map[string]string{"mesh": meshSelA, "meshNetworks": configA})
	h.waitSelectors(t, 2, "env=prod | team in (a,b)")
	if !h.src.Current().DiscoverySelectors.Selects(map[string]string{"team": "b"}) ||
		h.src.Current().DiscoverySelectors.Selects(map[string]string{"team": "c"}) {
		t.Error("selectors do not select as written")
	}

	// An invalid edit is rejected with the field's path; the last good one stays.
	putConfigMap(t, ns, "istio", map[string]string{"mesh": meshSelBad})
	h.waitRejected(t, meshSelBadError, 2, "env=prod | team in (a,b)")

	// An edit of another key changes nothing; the fix is accepted.
	putConfigMap(t, ns, "istio", map[string]string{"mesh": meshSelBad, "meshNetworks": configB})
	putConfigMap(t, ns, "istio", map[string]string{"mesh": meshSelB})
	h.waitSelectors(t, 3, "env=staging")

	// Removing the key selects every namespace again.
	putConfigMap(t, ns, "istio", map[string]string{"meshNetworks": configA})
	h.waitSelectors(t, 4, "*")
}

func TestMeshConfigFromFile(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "mesh")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(meshSelA)
	h := startMeshConfig(t, meshsource.MeshConfigOptions{File: path})
	h.waitSelectors(t, 1, "env=prod | team in (a,b)")
	write(meshSelBad)
	h.waitRejected(t, meshSelBadError, 1, "env=prod | team in (a,b)")
	write("discoverySelectors: 3\n")
	h.waitRejected(t, "parse mesh config", 1, "env=prod | team in (a,b)")
	write(meshSelB)
	h.waitSelectors(t, 2, "env=staging")
}

// TestMeshConfigClusterLocalFromFile: turning serviceSettings clusterLocal on and
// off is a new generation delivered to OnChange; an invalid entry is rejected with
// its field's path and the cluster-local hosts in force stay.
func TestMeshConfigClusterLocalFromFile(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "mesh")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const host = "helloworld.sample.svc.cluster.local"
	write(meshSelB)
	h := startMeshConfig(t, meshsource.MeshConfigOptions{File: path})
	h.waitSelectors(t, 1, "env=staging")
	isLocal := func(want bool) {
		t.Helper()
		if got := h.src.Current().ClusterLocal.Matches(host); got != want {
			t.Errorf("%s cluster-local: %v, want %v", host, got, want)
		}
	}
	isLocal(false)
	write(meshSelB + "serviceSettings: [{settings: {clusterLocal: true}, hosts: [" + host + "]}]\n")
	h.waitSelectors(t, 2, "env=staging")
	isLocal(true)
	write(meshSelB + "serviceSettings: [{settings: {clusterLocal: true}, hosts: ['foo.*.svc']}]\n")
	h.waitRejected(t, "serviceSettings[0].hosts[0]", 2, "env=staging")
	isLocal(true)
	write(meshSelB)
	h.waitSelectors(t, 3, "env=staging")
	isLocal(false)
}
