package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
)

// cluster is the config cluster, a real API server shared by the tests; env runs it,
// and the remote clusters a test starts (and may stop) for itself.
var (
	cluster *kubetest.Cluster
	env     *kubetest.Environment
)

func TestMain(m *testing.M) {
	kubetest.Main(m, func(e *kubetest.Environment, cs []*kubetest.Cluster) { env, cluster = e, cs[0] }, "config")
}

func testOptions() app.Options {
	opts := app.NewOptions()
	opts.XDSAddress, opts.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	opts.Secrets.ClusterID = "config"
	opts.EDS.DebounceAfter, opts.EDS.DebounceMax = 10*time.Millisecond, 100*time.Millisecond
	return opts
}

func TestNewOptionsHoldTheFlagDefaults(t *testing.T) {
	opts := app.NewOptions()
	if err := opts.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"--xds-address", opts.XDSAddress, ""},
		{"xDS listen address", opts.XDSListenAddress(), "127.0.0.1:15010"},
		{"--xds-allow-plaintext-remote", fmt.Sprint(opts.XDSAllowPlaintextRemote), "false"},
		{"--trust-domain", opts.TrustDomain, "cluster.local"},
		{"--http-address", opts.HTTPAddress, ":15014"},
		{"--namespace", opts.Secrets.Namespace, "istio-system"},
		{"--cluster-id", string(opts.Secrets.ClusterID), "Kubernetes"},
		{"--domain-suffix", opts.Registry.DomainSuffix, "cluster.local"},
		{"--debounce-after", opts.EDS.DebounceAfter.String(), "100ms"},
		{"--remote-probe-interval", opts.Registry.ProbeInterval.String(), "5s"},
		{"--remote-probe-timeout", opts.Registry.ProbeTimeout.String(), "5s"},
		{"--remote-probe-failures", fmt.Sprint(opts.Registry.ProbeFailures), "3"},
		{"--debug-access", string(opts.Debug.Access), "loopback-or-token"},
		{"--debug-token-audience", opts.Debug.Audience, "horizon"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	bad := testOptions()
	bad.Secrets.Namespace = ""
	if _, err := app.New(bad, cluster.Config, logger); err == nil || !strings.Contains(err.Error(), "--namespace: must not be empty") {
		t.Errorf("empty namespace: err = %v", err)
	}
	if _, err := app.New(testOptions(), nil, logger); err == nil {
		t.Error("no config cluster: no error")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := testOptions()
	busy.HTTPAddress = taken.Addr().String()
	if _, err := app.New(busy, cluster.Config, logger); err == nil || !strings.Contains(err.Error(), "listen on --http-address") {
		t.Errorf("HTTP address in use: err = %v", err)
	}
}

// runOnce runs Horizon against the config cluster until it is ready and serves a
// proxy, then stops it and checks that Run returned and let go of its addresses.
func runOnce(t *testing.T) {
	t.Helper()
	logs := &kubetest.LogBuffer{}
	h, err := app.New(testOptions(), cluster.Config, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("horizon logs:\n%s", logs.String())
		}
	}()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()

	kubetest.Eventually(t, 20*time.Second, h.Ready)
	// Once ready, the heap freed by the initial lists goes back to the OS.
	kubetest.Eventually(t, 10*time.Second, func() error {
		if n := strings.Count(logs.String(), "startup memory returned to the OS"); n != 1 {
			return fmt.Errorf("startup memory returned %d times, want once", n)
		}
		return nil
	})
	if cs := h.Registry().Clusters(); len(cs) != 1 || cs[0].ID != "config" || cs[0].State != clusterregistry.StateSynced {
		t.Errorf("clusters = %+v, want the config cluster, synced", cs)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/debug/clusterz"} {
		resp, err := client.Get("http://" + h.HTTPAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	t.Run("a proxy is served", func(t *testing.T) {
		// The stream ends with the subtest, before the shutdown.
		proxy := xdstest.Connect(t, h.XDSAddr().String(), xdstest.Node("sidecar~10.0.0.1~a.b~b.svc.cluster.local", ""), xdstest.Options{CDS: true})
		kubetest.Eventually(t, 10*time.Second, func() error {
			if proxy.ResponsesFor(xdstest.TypeCluster) == 0 {
				return errors.New("no CDS response")
			}
			return nil
		})
	})
	if err := h.Run(ctx); err == nil {
		t.Error("a second Run did not fail")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	for _, addr := range []net.Addr{h.XDSAddr(), h.HTTPAddr()} {
		if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Run returned", addr)
		}
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Error("no shutdown logged")
	}
}

// TestRunShutsDownCleanly runs Horizon twice in a row: the second run must leave no
// goroutine behind (the first starts what client-go starts once per process).
func TestRunShutsDownCleanly(t *testing.T) {
	runOnce(t)
	baseline := goleak.IgnoreCurrent()
	runOnce(t)
	goleak.VerifyNone(t, baseline)
}

// ExampleNew runs Horizon in a pod, as `horizon serve --cluster-id cluster1` does,
// until SIGTERM.
func ExampleNew() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	config, err := rest.InClusterConfig()
	if err != nil {
		fmt.Println(err)
		return
	}
	opts := app.NewOptions()
	opts.Secrets.ClusterID = "cluster1"
	h, err := app.New(opts, config, slog.Default())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("xDS on", h.XDSAddr())
	if err := h.Run(ctx); err != nil {
		fmt.Println(err)
	}
}

// TestPlaintextXDSOnlyOnLoopback checks where xDS listens by default, and that
// plaintext xDS is refused on an address other hosts reach unless asked for.
func TestPlaintextXDSOnlyOnLoopback(t *testing.T) {
	withTLS := app.TLSOptions{CertFile: "tls.crt", KeyFile: "tls.key"}
	tests := []struct {
		name       string
		addr       string
		tls        app.TLSOptions
		allow      bool
		wantListen string
		wantErr    bool
	}{
		{"default, plaintext", "", app.TLSOptions{}, false, "127.0.0.1:15010", false},
		{"default, TLS", "", withTLS, false, ":15010", false},
		{"IPv4 loopback", "127.0.0.1:0", app.TLSOptions{}, false, "127.0.0.1:0", false},
		{"other IPv4 loopback", "127.1.2.3:9000", app.TLSOptions{}, false, "127.1.2.3:9000", false},
		{"IPv6 loopback", "[::1]:15010", app.TLSOptions{}, false, "[::1]:15010", false},
		{"localhost", "localhost:15010", app.TLSOptions{}, false, "localhost:15010", false},
		{"every interface", ":15010", app.TLSOptions{}, false, ":15010", true},
		{"every IPv4 interface", "0.0.0.0:15010", app.TLSOptions{}, false, "0.0.0.0:15010", true},
		{"every IPv6 interface", "[::]:15010", app.TLSOptions{}, false, "[::]:15010", true},
		{"pod IP", "10.1.2.3:15010", app.TLSOptions{}, false, "10.1.2.3:15010", true},
		{"host name", "horizon.example:15010", app.TLSOptions{}, false, "horizon.example:15010", true},
		{"every interface, allowed", ":15010", app.TLSOptions{}, true, ":15010", false},
		{"every interface, TLS", ":15010", withTLS, false, ":15010", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := app.NewOptions()
			opts.XDSAddress, opts.TLS, opts.XDSAllowPlaintextRemote = tt.addr, tt.tls, tt.allow
			if got := opts.XDSListenAddress(); got != tt.wantListen {
				t.Errorf("listens on %q, want %q", got, tt.wantListen)
			}
			err := opts.Validate()
			if tt.tls.CertFile != "" {
				// The TLS files do not exist; only the address matters here.
				if err == nil || strings.Contains(err.Error(), "plaintext") {
					t.Fatalf("err = %v, want only the missing TLS files", err)
				}
				return
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := fmt.Sprintf("--xds-address %q: plaintext xDS listens only on a loopback address", tt.wantListen)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--xds-allow-plaintext-remote") {
				t.Fatalf("err = %v, want it to contain %q and name --xds-allow-plaintext-remote", err, want)
			}
		})
	}

	t.Run("New refuses it too", func(t *testing.T) {
		opts := testOptions()
		opts.XDSAddress = "0.0.0.0:0"
		_, err := app.New(opts, cluster.Config, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil || !strings.Contains(err.Error(), "--xds-allow-plaintext-remote") {
			t.Fatalf("err = %v, want a refusal naming --xds-allow-plaintext-remote", err)
		}
	})
	t.Run("allowed on every interface", func(t *testing.T) {
		opts := testOptions()
		opts.XDSAddress, opts.XDSAllowPlaintextRemote = "0.0.0.0:0", true
		logs := &kubetest.LogBuffer{}
		h, err := app.New(opts, cluster.Config, slog.New(slog.NewTextHandler(logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel() // Run starts and shuts down at once, closing the listeners.
		if err := h.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if ip := h.XDSAddr().(*net.TCPAddr).IP; !ip.IsUnspecified() {
			t.Errorf("xDS listened on %s, want every interface", h.XDSAddr())
		}
		if !strings.Contains(logs.String(), "xDS is served in plaintext") {
			t.Errorf("no plaintext warning logged:\n%s", logs)
		}
	})
}
