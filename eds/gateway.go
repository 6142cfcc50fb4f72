package eds

import (
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
	Port     uint32
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
// the default server when none selects it and the default is on.
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

// buildRouterResources builds a gateway's listeners (one per port, one SNI filter
// chain per exposed service port, each a tcp_proxy to the cluster of the same name,
// no TLS termination) and those clusters.
func buildRouterResources(servers []PassthroughServer, hosts map[string]*hostState) (listeners, clusters []types.Resource) {
	byPort := map[uint32][]string{} // listener port → SNI names
	sniSet := map[string]bool{}
	for _, host := range slices.Sorted(maps.Keys(hosts)) {
		hs := hosts[host]
		for _, s := range servers {
			if !s.matchesHost(host, hs.namespace) {
				continue
			}
			for _, p := range hs.ports {
				sni := SNIName(host, p)
				if !slices.Contains(byPort[s.Port], sni) {
					byPort[s.Port] = append(byPort[s.Port], sni)
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
