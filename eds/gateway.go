package eds

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/horizon-mesh/horizon/clusterregistry"
)

// DefaultPassthroughPort is where a gateway listens for cross-network mTLS when no
// AUTO_PASSTHROUGH Gateway resource selects it.
const DefaultPassthroughPort = 15443

// istioALPNs are the ALPN values Istio's sidecars offer on mTLS connections; a
// passthrough filter chain matches them.
var istioALPNs = []string{"istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"}

// PassthroughServer is one server of an Istio Gateway resource with
// tls.mode AUTO_PASSTHROUGH.
type PassthroughServer struct {
	// Gateway is the resource's namespace/name.
	Gateway string
	// Selector picks the gateway pods (by their labels) that run this server.
	Selector map[string]string
	// Port is the server's port: as in Istio, a port of the gateway Service. The
	// listener binds the target port behind it (listenerPort).
	Port uint32
	// Hosts are the Gateway's host patterns: "*", "*.local", "ns/host", "./host", "*/host".
	Hosts []string
}

// GatewayConfig supplies the AUTO_PASSTHROUGH servers in force.
type GatewayConfig interface {
	PassthroughServers() []PassthroughServer
}

// selects reports whether the server applies to a gateway pod with labels.
func (s PassthroughServer) selects(labels map[string]string) bool {
	for k, v := range s.Selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// matchesHost reports whether the server exposes service host in namespace ns.
func (s PassthroughServer) matchesHost(host, ns string) bool {
	gwNS, _, _ := strings.Cut(s.Gateway, "/")
	for _, h := range s.Hosts {
		pattern := h
		if nsPart, dns, ok := strings.Cut(h, "/"); ok {
			switch nsPart {
			case "*":
			case ".":
				if ns != gwNS {
					continue
				}
			default:
				if ns != nsPart {
					continue
				}
			}
			pattern = dns
		}
		if dnsMatch(pattern, host) {
			return true
		}
	}
	return false
}

// dnsMatch matches host against "*", "*.suffix" or an exact name.
func dnsMatch(pattern, host string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(host, pattern[1:])
	default:
		return host == pattern
	}
}

// routerServers returns the passthrough servers of a gateway pod with labels, or
// the default server when none selects it and the default is on. The default
// server's port, 15443, is bound like any other (listenerPort).
func routerServers(all []PassthroughServer, labels map[string]string, defaultOn bool) []PassthroughServer {
	var out []PassthroughServer
	for _, s := range all {
		if s.selects(labels) {
			out = append(out, s)
		}
	}
	if len(out) == 0 && defaultOn {
		out = []PassthroughServer{{Gateway: "(default)", Port: DefaultPassthroughPort, Hosts: []string{"*"}}}
	}
	return out
}

// routerServices returns the gateway Services of a router with view v: the
// Services among candidates whose selector (not empty) selects its pods, which
// have v.Labels; those in clusters on the router's network (topo.ProxyNetwork)
// when there are any, else all of them; sorted by cluster, namespace and name.
func routerServices(candidates []*clusterregistry.Service, v View, topo *Topology) []*clusterregistry.Service {
	if len(v.Labels) == 0 {
		return nil
	}
	pn := topo.ProxyNetwork(v)
	var on, off []*clusterregistry.Service
	for _, svc := range candidates {
		if !selectorSelects(svc.Selector, v.Labels) {
			continue
		}
		if topo.clusterNetwork(svc.Cluster) == pn {
			on = append(on, svc)
		} else {
			off = append(off, svc)
		}
	}
	out := on
	if len(out) == 0 {
		out = off
	}
	slices.SortFunc(out, func(a, b *clusterregistry.Service) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// selectorSelects reports whether a Service selector selects a pod with labels: it
// is not empty, and the pod has each of its labels with its value.
func selectorSelects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// listenerPort returns the port a router binds for a Gateway server on port, as
// Istio binds it: the server port is a port of the gateway Service, and the listener
// goes on its target port (443 → 8443 for Istio's non-root gateways). It is the
// target port of the first of svcs (routerServices) with port as a TCP port whose
// target port is known, else port itself.
func listenerPort(port uint32, svcs []*clusterregistry.Service) uint32 {
	for _, svc := range svcs {
		for _, p := range svc.Ports {
			if uint32(p.Port) == port && (p.Protocol == "" || p.Protocol == "TCP") && p.TargetPort > 0 {
				return uint32(p.TargetPort)
			}
		}
	}
	return port
}

// buildRouterResources builds a gateway's listeners and those clusters: one
// listener per bound port (listenerPort of each server's port, given the router's
// gateway Services svcs), named after it as Istio names it (0.0.0.0_8443), with one
// SNI filter chain per exposed service port, each a tcp_proxy to the cluster of the
// same name, no TLS termination.
func buildRouterResources(servers []PassthroughServer, hosts map[string]*hostState, svcs []*clusterregistry.Service) (listeners, clusters []types.Resource) {
	byPort := map[uint32][]string{} // listener port → SNI names
	sniSet := map[string]bool{}
	for _, host := range slices.Sorted(maps.Keys(hosts)) {
		hs := hosts[host]
		for _, s := range servers {
			if !s.matchesHost(host, hs.namespace) {
				continue
			}
			port := listenerPort(s.Port, svcs)
			for _, p := range hs.ports {
				sni := SNIName(host, p)
				if !slices.Contains(byPort[port], sni) {
					byPort[port] = append(byPort[port], sni)
				}
				sniSet[sni] = true
			}
		}
	}
	for _, port := range slices.Sorted(maps.Keys(byPort)) {
		listeners = append(listeners, buildPassthroughListener(port, byPort[port]))
	}
	for _, sni := range slices.Sorted(maps.Keys(sniSet)) {
		clusters = append(clusters, buildPassthroughCluster(sni))
	}
	return listeners, clusters
}

func buildPassthroughListener(port uint32, snis []string) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name: fmt.Sprintf("0.0.0.0_%d", port),
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       "envoy.filters.listener.tls_inspector",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
		}},
	}
	for _, sni := range snis {
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name: sni,
			FilterChainMatch: &listenerv3.FilterChainMatch{
				ServerNames:          []string{sni},
				ApplicationProtocols: istioALPNs,
			},
			Filters: []*listenerv3.Filter{{
				Name: "envoy.filters.network.tcp_proxy",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxyv3.TcpProxy{
					StatPrefix:       sni,
					ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: sni},
				})},
			}},
		})
	}
	return l
}

// buildPassthroughCluster is the gateway's EDS cluster for one SNI name: plain TCP,
// since the gateway passes the client's mTLS through.
func buildPassthroughCluster(sni string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 sni,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource, ServiceName: sni},
		ConnectTimeout:       durationpb.New(10 * time.Second),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}
