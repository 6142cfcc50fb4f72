package eds

import (
	"maps"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
)

// Role is what kind of proxy a group serves.
type Role string

const (
	// RoleSidecar is an application's proxy: it sees every network's endpoints,
	// remote ones through their gateways.
	RoleSidecar Role = "sidecar"
	// RoleRouter is a network's ingress gateway in AUTO_PASSTHROUGH mode: it sees the
	// mTLS endpoints of its own network only.
	RoleRouter Role = "router"
	// RoleGRPC is a proxyless gRPC client; it sees what a sidecar sees.
	RoleGRPC Role = "grpc"
)

// Node metadata keys Horizon reads, as Istio's proxies send them.
const (
	MetaNetwork     = "NETWORK"
	MetaRouterMode  = "ROUTER_MODE"
	MetaGenerator   = "GENERATOR"
	MetaNetworkView = "REQUESTED_NETWORK_VIEW"
	MetaLabels      = "LABELS"
	MetaClusterID   = "CLUSTER_ID"
	// MetaNodeName is the name of the Kubernetes node the proxy runs on.
	MetaNodeName = "NODE_NAME"
)

// View is where a group of proxies sees the mesh from. Proxies with equal views get
// identical resources.
type View struct {
	Role Role
	// Network is the proxy's NETWORK metadata; "" if it sent none.
	Network network.NetworkID
	// Cluster is the proxy's CLUSTER_ID metadata when it sent no NETWORK: the proxy
	// is then on its cluster's network (Topology.ProxyNetwork), or on the unnamed
	// network if the cluster has none.
	Cluster network.ClusterID
	// NetworkView, if not empty, limits the proxy to endpoints on these networks (and
	// endpoints with no network), sorted.
	NetworkView []network.NetworkID
	// Labels are a router's pod labels (node metadata LABELS): they decide which
	// Gateway resources select it. Empty for other roles.
	Labels map[string]string
	// Locality is the proxy's node locality and Node its NODE_NAME metadata: where
	// it runs, which decides the priorities of services with a traffic distribution.
	// The server keeps them in a view only while a service needs them (admit), so
	// that they do not split groups otherwise.
	Locality clusterregistry.Locality
	Node     string
	// NodeCluster is the proxy's CLUSTER_ID when it sent a NODE_NAME: node names
	// are unique only within a cluster.
	NodeCluster string
	// Home is the proxy's CLUSTER_ID, whatever its NETWORK, while the mesh config
	// makes some host cluster-local (Server.SetClusterLocal): those hosts' endpoints
	// come from this cluster only (none if no cluster of that ID serves them). Empty
	// otherwise, so that it does not split groups while nothing needs it.
	Home network.ClusterID
}

// endpointsKey identifies what the view's endpoints depend on: everything in Key
// but a router's labels, which choose only its listeners and clusters.
func (v View) endpointsKey() string {
	v.Labels = nil
	return v.Key()
}

// withoutPlace returns v without the proxy's locality and node.
func (v View) withoutPlace() View {
	v.Locality, v.Node, v.NodeCluster = clusterregistry.Locality{}, "", ""
	return v
}

// Key identifies the view: proxies with equal keys share one group.
func (v View) Key() string {
	var b strings.Builder
	b.WriteString(string(v.Role))
	b.WriteByte('~')
	b.WriteString(string(v.Network))
	if v.Cluster != "" {
		b.WriteString("~cluster:")
		b.WriteString(string(v.Cluster))
	}
	if v.Home != "" {
		b.WriteString("~home:")
		b.WriteString(string(v.Home))
	}
	if v.Locality != (clusterregistry.Locality{}) {
		b.WriteString("~loc:")
		b.WriteString(v.Locality.Region)
		b.WriteByte('/')
		b.WriteString(v.Locality.Zone)
		b.WriteByte('/')
		b.WriteString(v.Locality.Subzone)
	}
	if v.Node != "" {
		b.WriteString("~node:")
		b.WriteString(v.NodeCluster)
		b.WriteByte('/')
		b.WriteString(v.Node)
	}
	for i, n := range v.NetworkView {
		if i == 0 {
			b.WriteByte('~')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(string(n))
	}
	if len(v.Labels) > 0 {
		b.WriteString("~labels:")
		for i, k := range slices.Sorted(maps.Keys(v.Labels)) {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(k + "=" + v.Labels[k])
		}
	}
	return b.String()
}

// ViewOf reads a proxy's view from its node: role from the node ID (router~…) or
// ROUTER_MODE, or GENERATOR=grpc; network from NETWORK, else cluster from CLUSTER_ID;
// view from REQUESTED_NETWORK_VIEW (comma separated); locality from the node's
// locality and node from NODE_NAME (a router's are not read: it serves its own
// network's endpoints without priorities).
func ViewOf(node *corev3.Node) View {
	v := View{Role: RoleSidecar}
	if node == nil {
		return v
	}
	md := node.GetMetadata().GetFields()
	str := func(k string) string { return md[k].GetStringValue() }
	switch {
	case strings.HasPrefix(node.GetId(), "router~") || str(MetaRouterMode) != "":
		v.Role = RoleRouter
	case str(MetaGenerator) == "grpc":
		v.Role = RoleGRPC
	}
	v.Network = network.NetworkID(str(MetaNetwork))
	if v.Network == "" {
		v.Cluster = network.ClusterID(str(MetaClusterID))
	}
	if v.Role != RoleRouter {
		l := node.GetLocality()
		v.Locality = clusterregistry.Locality{Region: l.GetRegion(), Zone: l.GetZone(), Subzone: l.GetSubZone()}
		if v.Node = str(MetaNodeName); v.Node != "" {
			v.NodeCluster = str(MetaClusterID)
		}
	}
	if v.Role == RoleRouter {
		for k, val := range md[MetaLabels].GetStructValue().GetFields() {
			if v.Labels == nil {
				v.Labels = map[string]string{}
			}
			v.Labels[k] = val.GetStringValue()
		}
	}
	if nv := str(MetaNetworkView); nv != "" {
		for _, n := range strings.Split(nv, ",") {
			if n = strings.TrimSpace(n); n != "" {
				v.NetworkView = append(v.NetworkView, network.NetworkID(n))
			}
		}
		slices.Sort(v.NetworkView)
		v.NetworkView = slices.Compact(v.NetworkView)
	}
	return v
}

// homeOf is a proxy's CLUSTER_ID, its View.Home while some host is cluster-local.
func homeOf(node *corev3.Node) network.ClusterID {
	return network.ClusterID(node.GetMetadata().GetFields()[MetaClusterID].GetStringValue())
}

func (v View) sees(n network.NetworkID) bool {
	if len(v.NetworkView) == 0 || n == "" {
		return true
	}
	_, found := slices.BinarySearch(v.NetworkView, n)
	return found
}
