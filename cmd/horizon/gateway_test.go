package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

const (
	echoHost = "echo.gwtest.svc.cluster.local"
	echoSNI  = "outbound_.7000_._." + echoHost
)

func echo(mtls bool, ips ...string) kubetest.Service {
	s := kubetest.Service{
		Namespace: "gwtest", Name: "echo",
		Ports: []corev1.ServicePort{{Name: "grpc", Port: 7000, TargetPort: intstr.FromInt32(7000)}},
	}
	for i, ip := range ips {
		labels := map[string]string{}
		if mtls || i > 0 {
			labels[network.LabelTLSMode] = network.TLSModeIstio
		}
		s.Backends = append(s.Backends, kubetest.Backend{Pod: fmt.Sprintf("echo-%d", i), IP: ip, Ready: true, Labels: labels})
	}
	return s
}

// filterChains summarizes a passthrough listener: "SNI→cluster" per chain.
func filterChains(t *testing.T, l *listenerv3.Listener) []string {
	t.Helper()
	var out []string
	for _, fc := range l.GetFilterChains() {
		var tp tcpproxyv3.TcpProxy
		if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.Join(fc.GetFilterChainMatch().GetServerNames(), ",")+"→"+tp.GetCluster())
	}
	return out
}

// TestGatewayProxy connects network2's ingress gateway (a router proxy) to `horizon
// serve`: first with no Gateway resource (the default passthrough listener on 15443),
// then with the reference scenario's AUTO_PASSTHROUGH Gateway on 443, applied from
// examples/ with the CRD shipped there. (A CRD installed after Horizon started is
// found within 30 s; network/gatewaysource tests that.)
func TestGatewayProxy(t *testing.T) {
	ctx := t.Context()
	// Pod 0 in cluster2 has no sidecar (not mTLS): the gateway must not get it.
	if err := kubetest.Deploy(ctx, cluster2.Client, echo(false, "10.2.7.1", "10.2.7.2")); err != nil {
		t.Fatal(err)
	}
	if err := kubetest.Deploy(ctx, cluster1.Client, echo(true, "10.1.7.1")); err != nil {
		t.Fatal(err)
	}
	writeMeshNetworks(t, meshNetworks)
	writeRemoteSecret(t, "istio-remote-secret-gw-cluster2", cluster2, "cluster2")
	// The CRD shipped in examples/; no Gateway resource yet.
	if err := kubetest.ApplyFile(ctx, cluster1.Config, "../../examples/gateway-crd.yaml"); err != nil {
		t.Fatal(err)
	}
	xdsAddr, _, _ := startServe(t)

	gateway := xdstest.Connect(t, xdsAddr, xdstest.NodeWithMetadata(
		"router~10.2.0.100~istio-ingressgateway-5d8f.istio-system~istio-system.svc.cluster.local",
		map[string]any{"NETWORK": "network2", "LABELS": map[string]any{"istio": "ingressgateway", "app": "istio-ingressgateway"}},
	), xdstest.Options{Delta: true, LDS: true, CDS: true, EDS: []string{echoSNI}})
	other := xdstest.Connect(t, xdsAddr, xdstest.NodeWithMetadata(
		"router~10.2.0.101~eastwest-7c9b.istio-system~istio-system.svc.cluster.local",
		map[string]any{"NETWORK": "network2", "LABELS": map[string]any{"istio": "eastwestgateway"}},
	), xdstest.Options{LDS: true, CDS: true, EDS: []string{echoSNI}})

	// The gateway's EDS: only network2's mTLS endpoints, by pod IP.
	waitEDS := func(p *xdstest.Proxy) {
		kubetest.Eventually(t, 10*time.Second, func() error {
			got := xdstest.Summary(p.CLA(echoSNI))
			if want := "//(1): 10.2.7.2:7000*1+mtls"; strings.Join(got, "\n") != want {
				return fmt.Errorf("gateway EDS %q, want %q", got, want)
			}
			return nil
		})
	}
	waitEDS(gateway)
	waitEDS(other)

	waitListener := func(p *xdstest.Proxy, want string, notWant string) {
		t.Helper()
		kubetest.Eventually(t, 10*time.Second, func() error {
			l := p.Listener(want)
			if l == nil {
				return fmt.Errorf("listener %s missing; have %v", want, p.Names(xdstest.TypeListener))
			}
			if notWant != "" && p.Listener(notWant) != nil {
				return fmt.Errorf("listener %s still there", notWant)
			}
			chains := filterChains(t, l)
			if !slices.Contains(chains, echoSNI+"→"+echoSNI) {
				return fmt.Errorf("no filter chain for %s in %v", echoSNI, chains)
			}
			if len(l.GetListenerFilters()) != 1 || l.GetListenerFilters()[0].GetName() != "envoy.filters.listener.tls_inspector" {
				return fmt.Errorf("listener filters %v", l.GetListenerFilters())
			}
			if p.Cluster(echoSNI) == nil {
				return fmt.Errorf("cluster %s missing; have %v", echoSNI, p.Names(xdstest.TypeCluster))
			}
			if p.Cluster(echoSNI).GetTransportSocket() != nil {
				return fmt.Errorf("passthrough cluster terminates or originates TLS")
			}
			return nil
		})
	}
	waitListener(gateway, "0.0.0.0_15443", "")
	waitListener(other, "0.0.0.0_15443", "")

	// The reference scenario's Gateway, from examples/.
	if err := kubetest.EnsureNamespace(ctx, cluster1.Client, "sample", nil); err != nil {
		t.Fatal(err)
	}
	if err := kubetest.ApplyFile(ctx, cluster1.Config, "../../examples/cross-network-gateway.yaml"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		gvr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "gateways"}
		_ = dynamic.NewForConfigOrDie(cluster1.Config).Resource(gvr).Namespace("sample").Delete(context.Background(), "helloworld-gateway", metav1.DeleteOptions{})
	})
	// The selected gateway moves to 443; the other keeps the default listener.
	waitListener(gateway, "0.0.0.0_443", "0.0.0.0_15443")
	waitListener(other, "0.0.0.0_15443", "")
}
