package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// TestTrustDomainReachesClusters runs Horizon with --trust-domain example.org: the
// sidecar cluster of a service whose pod runs as service account web accepts the
// server identity spiffe://example.org/ns/peerid/sa/web, and no other.
func TestTrustDomainReachesClusters(t *testing.T) {
	ctx := t.Context()
	err := kubetest.Deploy(ctx, cluster.Client, kubetest.Service{
		Namespace: "peerid", Name: "web",
		Ports: []corev1.ServicePort{{Name: "grpc", Port: 7070, TargetPort: intstr.FromInt32(7070)}},
		Backends: []kubetest.Backend{{
			Pod: "web-0", IP: "10.7.0.1", Ready: true, ServiceAccount: "web",
			Labels: map[string]string{network.LabelTLSMode: network.TLSModeIstio},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.TrustDomain = "example.org"
	h, err := app.New(opts, cluster.Config, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	kubetest.Eventually(t, 20*time.Second, h.Ready)

	const name = "outbound|7070||web.peerid.svc.cluster.local"
	proxy := xdstest.Connect(t, h.XDSAddr().String(), xdstest.Node("sidecar~10.0.0.1~a.peerid~peerid.svc.cluster.local", ""), xdstest.Options{CDS: true})
	want := []string{"spiffe://example.org/ns/peerid/sa/web"}
	kubetest.Eventually(t, 20*time.Second, func() error {
		c := proxy.Cluster(name)
		if c == nil {
			return fmt.Errorf("cluster %s not received", name)
		}
		for _, m := range c.GetTransportSocketMatches() {
			if m.GetName() != "tlsMode-istio" {
				continue
			}
			tc := &tlsv3.UpstreamTlsContext{}
			if err := m.GetTransportSocket().GetTypedConfig().UnmarshalTo(tc); err != nil {
				return err
			}
			var got []string
			for _, san := range tc.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
				got = append(got, san.GetMatcher().GetExact())
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("cluster %s accepts %q, want %q", name, got, want)
			}
			return nil
		}
		return fmt.Errorf("cluster %s has no tlsMode-istio transport socket", name)
	})
}
