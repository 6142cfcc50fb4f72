package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/tlstest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
)

// startHorizon runs Horizon with opts against the config cluster until the test
// ends, and returns it once it is ready.
func startHorizon(t *testing.T, opts app.Options) *app.Horizon {
	t.Helper()
	logs := &kubetest.LogBuffer{}
	h, err := app.New(opts, cluster.Config, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("horizon logs:\n%s", logs.String())
		}
	})
	kubetest.Eventually(t, 20*time.Second, h.Ready)
	return h
}

// xdsClient is a proxy's connection to Horizon's xDS server over mutual TLS.
type xdsClient struct {
	t    *testing.T
	conn *grpc.ClientConn
}

func dialXDS(t *testing.T, addr string, cfg credentials.TransportCredentials) *xdsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &xdsClient{t: t, conn: conn}
}

func (c *xdsClient) ctx() context.Context {
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	c.t.Cleanup(cancel)
	return ctx
}

// sotw opens a state-of-the-world ADS stream, sends each request (each for another
// type) in turn, reading a response after each, and returns the first error.
func (c *xdsClient) sotw(reqs ...*discoveryv3.DiscoveryRequest) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).StreamAggregatedResources(c.ctx())
	if err != nil {
		return err
	}
	var last *discoveryv3.DiscoveryResponse
	for _, req := range reqs {
		if err := st.Send(req); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if last, err = st.Recv(); err != nil {
			return err
		}
		if last.GetTypeUrl() != req.GetTypeUrl() {
			return fmt.Errorf("response of type %q, want %q", last.GetTypeUrl(), req.GetTypeUrl())
		}
	}
	return nil
}

// delta is sotw on a delta ADS stream.
func (c *xdsClient) delta(reqs ...*discoveryv3.DeltaDiscoveryRequest) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).DeltaAggregatedResources(c.ctx())
	if err != nil {
		return err
	}
	for _, req := range reqs {
		if err := st.Send(req); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if _, err := st.Recv(); err != nil {
			return err
		}
	}
	return nil
}

// fetch makes a unary FetchClusters call.
func (c *xdsClient) fetch(node *corev3.Node) error {
	resp := new(discoveryv3.DiscoveryResponse)
	return c.conn.Invoke(c.ctx(), "/envoy.service.cluster.v3.ClusterDiscoveryService/FetchClusters",
		&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: xdstest.TypeCluster}, resp)
}

// wantRefused fails the test unless err is PERMISSION_DENIED with a message holding
// want and no longer than a bound.
func wantRefused(t *testing.T, err error, want string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != codes.PermissionDenied {
		t.Fatalf("err = %v, want PermissionDenied", err)
	}
	if !strings.Contains(st.Message(), want) {
		t.Fatalf("message %q, want it to contain %q", st.Message(), want)
	}
	if len(st.Message()) > 600 {
		t.Fatalf("message of %d bytes, want it bounded: %q", len(st.Message()), st.Message())
	}
}

// refusals scrapes horizon_xds_identity_refusals_total by reason.
func refusals(t *testing.T, h *app.Horizon) map[string]string {
	t.Helper()
	resp, err := http.Get("http://" + h.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^horizon_xds_identity_refusals_total\{reason="([a-z_]+)"\} (\S+)$`).FindAllStringSubmatch(string(body), -1) {
		got[m[1]] = m[2]
	}
	return got
}

// TestXDSIdentityBinding runs Horizon with mutual TLS on xDS and checks that a
// proxy's node may claim only the namespace and service account of its client
// certificate's SPIFFE ID, on state-of-the-world and delta streams and unary Fetch,
// on every request of a stream.
func TestXDSIdentityBinding(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh-ca")
	f := tlstest.WriteServerFiles(t, ca, "horizon", ca)
	opts := testOptions()
	opts.TLS = app.TLSOptions{CertFile: f.CertFile, KeyFile: f.KeyFile, ClientCAFile: f.ClientCAFile}
	h := startHorizon(t, opts)
	addr := h.XDSAddr().String()

	const (
		sleepID  = "spiffe://cluster.local/ns/sample/sa/sleep"
		sleepPod = "sidecar~10.0.0.1~sleep-0.sample~sample.svc.cluster.local"
	)
	sleepMeta := map[string]any{"NAMESPACE": "sample", "SERVICE_ACCOUNT": "sleep"}
	withMeta := func(id string, md map[string]any) *corev3.Node { return xdstest.NodeWithMetadata(id, md) }
	client := func(t *testing.T, uris ...string) *xdsClient {
		cert, key := ca.IssueClient(t, "proxy", uris...)
		return dialXDS(t, addr, credentials.NewTLS(ca.ClientConfig(t, cert, key)))
	}
	long := strings.Repeat("x", 10_000)

	tests := []struct {
		name string
		uris []string
		node *corev3.Node
		// want is what the refusal's message says; empty: served.
		want   string
		reason string
	}{
		{"namespace and service account of the certificate", []string{sleepID}, withMeta(sleepPod, sleepMeta), "", ""},
		{"namespace from the node ID only", []string{sleepID}, withMeta(sleepPod, nil), "", ""},
		{"node claiming no identity", []string{sleepID}, withMeta("proxy-1", nil), "", ""},
		{"other namespace in metadata", []string{sleepID}, withMeta(sleepPod, map[string]any{"NAMESPACE": "istio-system"}),
			`node metadata NAMESPACE names namespace "istio-system", but the client certificate's SPIFFE ID is ` + sleepID, "namespace"},
		{"other namespace in the node ID", []string{sleepID}, withMeta("sidecar~10.0.0.1~sleep-0.istio-system~istio-system.svc.cluster.local", nil),
			`names namespace "istio-system"`, "namespace"},
		{"other namespace in the node ID's pod name", []string{sleepID}, withMeta("sidecar~10.0.0.1~sleep-0.istio-system~sample.svc.cluster.local", nil),
			`the node ID's pod namespace names namespace "istio-system"`, "namespace"},
		{"namespace not a string", []string{sleepID}, withMeta(sleepPod, map[string]any{"NAMESPACE": 7}),
			"node metadata NAMESPACE is not a string", "namespace"},
		{"other service account", []string{sleepID}, withMeta(sleepPod, map[string]any{"NAMESPACE": "sample", "SERVICE_ACCOUNT": "admin"}),
			`node metadata SERVICE_ACCOUNT names service account "admin"`, "service_account"},
		{"long claimed namespace, cut in the message", []string{sleepID}, withMeta(sleepPod, map[string]any{"NAMESPACE": long}),
			`names namespace "` + long[:128] + `…"`, "namespace"},
		{"certificate without a SPIFFE ID", nil, withMeta(sleepPod, sleepMeta), "the client certificate has no SPIFFE ID", "no_spiffe_id"},
		{"certificate with another URI only", []string{"https://sample.example/sleep"}, withMeta(sleepPod, sleepMeta), "has no SPIFFE ID", "no_spiffe_id"},
		{"SPIFFE ID without a service account", []string{"spiffe://cluster.local/ns/sample"}, withMeta(sleepPod, sleepMeta),
			`SPIFFE ID "spiffe://cluster.local/ns/sample" is not a Kubernetes workload identity`, "malformed_spiffe_id"},
		{"SPIFFE ID with a query", []string{sleepID + "?x=1"}, withMeta(sleepPod, sleepMeta), "has a user, port, query or fragment", "malformed_spiffe_id"},
		{"two SPIFFE IDs", []string{sleepID, "spiffe://cluster.local/ns/istio-system/sa/istiod"}, withMeta(sleepPod, sleepMeta),
			"has 2 SPIFFE IDs, want one", "malformed_spiffe_id"},
		{"SPIFFE ID of another trust domain", []string{"spiffe://evil.example/ns/sample/sa/sleep"}, withMeta(sleepPod, sleepMeta),
			`is not in trust domain "cluster.local" (--trust-domain)`, "trust_domain"},
	}
	wantCount := map[string]int{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := client(t, tt.uris...)
			calls := []struct {
				name string
				err  error
			}{
				{"state of the world", c.sotw(&discoveryv3.DiscoveryRequest{Node: tt.node, TypeUrl: xdstest.TypeCluster})},
				{"delta", c.delta(&discoveryv3.DeltaDiscoveryRequest{Node: tt.node, TypeUrl: xdstest.TypeCluster})},
				{"fetch", c.fetch(tt.node)},
			}
			for _, call := range calls {
				t.Run(call.name, func(t *testing.T) {
					if tt.want == "" {
						if call.err != nil {
							t.Fatalf("refused: %v", call.err)
						}
						return
					}
					wantRefused(t, call.err, tt.want)
				})
			}
			if tt.reason != "" {
				wantCount[tt.reason] += len(calls)
			}
		})
	}

	// A stream served for its first request is ended by a later one claiming
	// another namespace; one repeating its node is served on.
	t.Run("later request switching namespace", func(t *testing.T) {
		c := client(t, sleepID)
		other := withMeta(sleepPod, map[string]any{"NAMESPACE": "istio-system"})
		same := withMeta(sleepPod, sleepMeta)
		if err := c.sotw(&discoveryv3.DiscoveryRequest{Node: same, TypeUrl: xdstest.TypeCluster},
			&discoveryv3.DiscoveryRequest{Node: same, TypeUrl: xdstest.TypeListener}); err != nil {
			t.Fatalf("state of the world, same node twice: %v", err)
		}
		wantRefused(t, c.sotw(&discoveryv3.DiscoveryRequest{Node: same, TypeUrl: xdstest.TypeCluster},
			&discoveryv3.DiscoveryRequest{Node: other, TypeUrl: xdstest.TypeListener}), `names namespace "istio-system"`)
		wantRefused(t, c.delta(&discoveryv3.DeltaDiscoveryRequest{Node: same, TypeUrl: xdstest.TypeCluster},
			&discoveryv3.DeltaDiscoveryRequest{Node: other, TypeUrl: xdstest.TypeListener}), `names namespace "istio-system"`)
		wantCount["namespace"] += 2
	})

	t.Run("refusals counted by reason", func(t *testing.T) {
		got := refusals(t, h)
		for _, reason := range []string{"no_certificate", "no_spiffe_id", "malformed_spiffe_id", "trust_domain", "namespace", "service_account"} {
			if want := fmt.Sprint(wantCount[reason]); got[reason] != want {
				t.Errorf("horizon_xds_identity_refusals_total{reason=%q} = %q, want %s", reason, got[reason], want)
			}
		}
		if len(got) != 6 {
			t.Errorf("reasons %v, want exactly the six fixed ones", got)
		}
	})
}

// TestXDSNoIdentityBindingWithoutClientCA: with TLS but no client CA there is no
// client identity to bind, so nodes are served whatever they claim.
func TestXDSNoIdentityBindingWithoutClientCA(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh-ca")
	f := tlstest.WriteServerFiles(t, ca, "horizon", nil)
	opts := testOptions()
	opts.TLS = app.TLSOptions{CertFile: f.CertFile, KeyFile: f.KeyFile}
	h := startHorizon(t, opts)
	c := dialXDS(t, h.XDSAddr().String(), credentials.NewTLS(ca.ClientConfig(t, nil, nil)))
	node := xdstest.NodeWithMetadata("sidecar~10.0.0.1~sleep-0.sample~sample.svc.cluster.local",
		map[string]any{"NAMESPACE": "istio-system", "SERVICE_ACCOUNT": "istiod"})
	if err := c.sotw(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: xdstest.TypeCluster}); err != nil {
		t.Fatal(err)
	}
	if err := c.fetch(node); err != nil {
		t.Fatal(err)
	}
	if got := refusals(t, h); len(got) != 0 {
		t.Errorf("identity refusals exported without a client CA: %v", got)
	}
}
