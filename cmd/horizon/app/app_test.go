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

// cluster is the config cluster, a real API server shared by the tests.
var cluster *kubetest.Cluster

func TestMain(m *testing.M) {
	kubetest.Main(m, func(_ *kubetest.Environment, cs []*kubetest.Cluster) { cluster = cs[0] }, "config")
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
		{"--xds-address", opts.XDSAddress, ":15010"},
		{"--http-address", opts.HTTPAddress, ":15014"},
		{"--namespace", opts.Secrets.Namespace, "istio-system"},
		{"--cluster-id", string(opts.Secrets.ClusterID), "Kubernetes"},
		{"--domain-suffix", opts.Registry.DomainSuffix, "cluster.local"},
		{"--debounce-after", opts.EDS.DebounceAfter.String(), "100ms"},
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
