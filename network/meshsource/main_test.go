package meshsource_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/meshsource"
)

// cluster is a real API server shared by the ConfigMap tests; each test uses its own
// namespace.
var cluster *kubetest.Cluster

func TestMain(m *testing.M) {
	kubetest.Main(m, func(_ *kubetest.Environment, cs []*kubetest.Cluster) { cluster = cs[0] }, "meshsource")
}

// Configurations used by the tests.
const (
	configA = `
networks:
  network1:
    endpoints:
    - fromRegistry: Kubernetes
  network2:
    endpoints:
    - fromRegistry: remote
    gateways:
    - address: 192.0.2.80
      port: 443
`
	configB = `
networks:
  network1:
    endpoints:
    - fromRegistry: Kubernetes
  network3:
    endpoints:
    - fromCidr: 10.3.0.0/16
`
	configC = `{"networks": {"network4": {"endpoints": [{"fromRegistry": "remote"}]}}}`
	// configBad has a gateway without a port.
	configBad = `
networks:
  network2:
    endpoints:
    - fromRegistry: remote
    gateways:
    - address: 192.0.2.80
`
	configBadError = "invalid meshNetworks: networks.network2.gateways[0].port: must be 1-65535"
)

// harness runs a Source until the test ends and records what it delivers.
type harness struct {
	src  *meshsource.Source
	logs *kubetest.LogBuffer

	mu      sync.Mutex
	changes [][]network.NetworkID // guarded by mu; Names() of each OnChange
}

func start(t *testing.T, opts meshsource.Options) *harness {
	t.Helper()
	h := &harness{logs: &kubetest.LogBuffer{}}
	opts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.OnChange = func(n *network.Networks) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.changes = append(h.changes, n.Names())
	}
	src, err := meshsource.New(opts)
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

func (h *harness) changeCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.changes)
}

func (h *harness) lastChange() []network.NetworkID {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.changes) == 0 {
		return nil
	}
	return h.changes[len(h.changes)-1]
}

// waitApplied waits until generation gen is in force with networks want, delivered by
// exactly gen OnChange calls, and no rejection is recorded.
func (h *harness) waitApplied(t *testing.T, gen int, want ...network.NetworkID) {
	t.Helper()
	kubetest.Eventually(t, 10*time.Second, func() error {
		st := h.src.Status()
		if st.Generation != gen || st.Rejected != "" {
			return fmt.Errorf("status %+v, want generation %d and no rejection", st, gen)
		}
		if got := h.src.Current().Names(); !slices.Equal(got, want) {
			return fmt.Errorf("current networks %v, want %v", got, want)
		}
		if n, last := h.changeCount(), h.lastChange(); n != gen || !slices.Equal(last, want) {
			return fmt.Errorf("%d changes delivered, last %v; want %d, last %v", n, last, gen, want)
		}
		return nil
	})
}

// waitRejected waits until the latest edit is rejected with wantErr while generation
// gen with networks want stays in force and no further OnChange happened.
func (h *harness) waitRejected(t *testing.T, wantErr string, gen int, want ...network.NetworkID) {
	t.Helper()
	kubetest.Eventually(t, 10*time.Second, func() error {
		st := h.src.Status()
		if st.Rejected != wantErr || st.RejectedAt.IsZero() {
			return fmt.Errorf("status %+v, want rejection %q", st, wantErr)
		}
		return nil
	})
	st := h.src.Status()
	if st.Generation != gen {
		t.Errorf("generation %d after a rejected edit, want %d", st.Generation, gen)
	}
	if got := h.src.Current().Names(); !slices.Equal(got, want) {
		t.Errorf("current networks %v after a rejected edit, want %v", got, want)
	}
	if n := h.changeCount(); n != gen {
		t.Errorf("%d changes delivered after a rejected edit, want %d", n, gen)
	}
	if !bytes.Contains([]byte(h.logs.String()), []byte(`level=ERROR msg="meshNetworks rejected"`)) {
		t.Errorf("no error logged for the rejected edit:\n%s", h.logs.String())
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    meshsource.Options
		wantErr string
	}{
		{name: "file", opts: meshsource.Options{File: "/etc/istio/meshNetworks"}},
		{name: "file wins over a client", opts: meshsource.Options{File: "/etc/istio/meshNetworks", Client: cluster.Client}},
		{name: "configmap", opts: meshsource.Options{Client: cluster.Client, Namespace: "istio-system"}},
		{name: "neither", opts: meshsource.Options{Namespace: "istio-system"},
			wantErr: "meshsource: a file (--mesh-networks) or a config-cluster client is required"},
		{name: "configmap without namespace", opts: meshsource.Options{Client: cluster.Client},
			wantErr: "--namespace: must not be empty"},
		{name: "negative durations", opts: meshsource.Options{File: "f", Debounce: -1, Resync: -time.Second},
			wantErr: "meshsource: debounce must not be negative, got -1ns\nmeshsource: resync must not be negative, got -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := meshsource.New(tc.opts)
			if tc.wantErr == "" {
				if err != nil || src == nil {
					t.Fatalf("New = %v, %v", src, err)
				}
				if st := src.Status(); st.Generation != 0 || src.HasSynced() || len(src.Current().Names()) != 0 {
					t.Errorf("new source: status %+v, synced %v, networks %v", st, src.HasSynced(), src.Current().Names())
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("error = %v, want %q", err, tc.wantErr)
			}
			if src != nil {
				t.Error("a Source with an error")
			}
		})
	}
}

// checkLeaks fails the test if goroutines started during it are still running once
// every cleanup registered after this call has run. Call it first.
func checkLeaks(t *testing.T) {
	t.Helper()
	baseline := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, baseline) })
}
