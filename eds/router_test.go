package eds

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
)

// staticGateways is a GatewayConfig with fixed servers.
type staticGateways []PassthroughServer

func (g staticGateways) PassthroughServers() []PassthroughServer { return g }

const gatewayHost = "istio-ingressgateway.istio-system.svc.cluster.local"

// ingressGatewayShard is cluster c1's istio-ingressgateway Service, selecting the
// pods with selector, its port 443 targeting target, and one gateway pod behind it.
func ingressGatewayShard(selector map[string]string, target int32) *clusterregistry.Shard {
	return &clusterregistry.Shard{
		Service: clusterregistry.Service{
			Host: gatewayHost, Name: "istio-ingressgateway", Namespace: "istio-system", Cluster: "c1",
			Labels: map[string]string{"istio": "ingressgateway"}, Selector: selector,
			Ports: []clusterregistry.ServicePort{{Name: "https", Port: 443, Protocol: "TCP", TargetPort: target}},
		},
		Endpoints: map[int32][]clusterregistry.Endpoint{443: {{
			Address: "10.0.9.1", Port: uint32(target), Ready: true, Cluster: "c1",
			Labels: map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"},
		}}},
	}
}

// TestRouterListenerOnTargetPort connects an ingress gateway (a router proxy with
// its pod labels in LABELS) that a Gateway resource gives a server on 443: its
// listener binds the target port behind the gateway Service's port 443, follows that
// Service's changes, and falls back to 443 once no Service selects the gateway.
// Every resource it is sent passes ValidateAll (xdstest checks).
func TestRouterListenerOnTargetPort(t *testing.T) {
	ingress := map[string]string{"istio": "ingressgateway"}
	f := newXDSFixture(t, func(o *Options) {
		o.Gateways = staticGateways{{Gateway: "sample/helloworld-gateway", Selector: ingress, Port: 443, Hosts: []string{"*"}}}
	})
	setGateway := func(selector map[string]string, target int32) {
		f.src.setShard(gatewayHost, "c1", ingressGatewayShard(selector, target))
		f.s.HostChanged(gatewayHost)
		f.s.push(time.Now())
	}
	setGateway(ingress, 8443)

	sniA := SNIName(hostA, 80)
	router := xdstest.Connect(t, f.addr, xdstest.NodeWithMetadata(
		"router~10.0.9.1~istio-ingressgateway-5d8f.istio-system~istio-system.svc.cluster.local",
		map[string]any{"LABELS": map[string]any{"istio": "ingressgateway", "app": "istio-ingressgateway"}},
	), xdstest.Options{LDS: true, CDS: true, EDS: []string{sniA}})
	wantListener := func(name string, port uint32) {
		t.Helper()
		kubetest.Eventually(t, 10*time.Second, func() error {
			if names := router.Names(xdstest.TypeListener); !slices.Equal(names, []string{name}) {
				return fmt.Errorf("listeners %q, want %s", names, name)
			}
			l := router.Listener(name)
			if got := l.GetAddress().GetSocketAddress().GetPortValue(); got != port {
				return fmt.Errorf("listener %s binds %d, want %d", name, got, port)
			}
			for _, fc := range l.GetFilterChains() {
				if slices.Contains(fc.GetFilterChainMatch().GetServerNames(), sniA) {
					return nil
				}
			}
			return fmt.Errorf("listener %s has no filter chain for %s", name, sniA)
		})
	}
	wantListener("0.0.0.0_8443", 8443)

	// Only the target port changes, not the set of service ports: the router is
	// rebuilt all the same.
	setGateway(ingress, 9443)
	wantListener("0.0.0.0_9443", 9443)

	// The Service no longer selects the gateway's pods: the Gateway port.
	setGateway(map[string]string{"istio": "eastwestgateway"}, 9443)
	wantListener("0.0.0.0_443", 443)

	// It selects them again, then goes: the Gateway port again.
	setGateway(ingress, 8443)
	wantListener("0.0.0.0_8443", 8443)
	f.src.setShard(gatewayHost, "c1", nil)
	f.s.HostChanged(gatewayHost)
	f.s.push(time.Now())
	wantListener("0.0.0.0_443", 443)
}
