package eds

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
)

// Bounds on a router's LABELS node metadata: a proxy group exists per label set,
// so a label set Kubernetes would not accept on a pod is refused.
const (
	maxLabels        = 64
	maxLabelKeyLen   = 317 // a DNS subdomain prefix (253), "/", a name (63)
	maxLabelValueLen = 63
)

// Reasons a proxy's view is refused, the reason label of
// horizon_xds_refused_views_total.
const (
	refusedUnknownNetwork = "unknown_network"
	refusedLabels         = "labels"
	refusedGroupLimit     = "group_limit"
	refusedNotReady       = "not_ready"
)

// known is what a proxy's view may name: the networks and clusters of the last
// push's topology. Immutable.
type known struct {
	networks map[network.NetworkID]bool
	clusters map[network.ClusterID]bool
}

// knownOf collects the networks Horizon knows (meshNetworks networks, cluster
// namespace labels, gateways' networks) and the clusters it knows (labelled
// clusters, meshNetworks fromRegistry clusters, gateways' clusters).
func knownOf(topo *Topology, gws []network.Gateway) *known {
	k := &known{networks: map[network.NetworkID]bool{}, clusters: map[network.ClusterID]bool{}}
	for _, n := range topo.Networks.Names() {
		k.networks[n] = true
	}
	for _, n := range topo.Networks.MeshNetworks().GetNetworks() {
		for _, ep := range n.GetEndpoints() {
			if c := ep.GetFromRegistry(); c != "" {
				k.clusters[network.ClusterID(c)] = true
			}
		}
	}
	for c, n := range topo.ClusterNetworks {
		k.clusters[c] = true
		k.networks[n] = true
	}
	for _, gw := range gws {
		k.networks[gw.Network] = true
		if gw.Cluster != "" {
			k.clusters[gw.Cluster] = true
		}
	}
	delete(k.networks, "")
	delete(k.clusters, "")
	return k
}

// checkLabels refuses a router's LABELS metadata that is larger than a pod's labels
// can be. It looks at the raw metadata, before ViewOf copies it.
func checkLabels(node *corev3.Node) error {
	fields := node.GetMetadata().GetFields()[MetaLabels].GetStructValue().GetFields()
	if len(fields) > maxLabels {
		return status.Errorf(codes.InvalidArgument, "node metadata %s has %d labels, more than %d", MetaLabels, len(fields), maxLabels)
	}
	for k, v := range fields {
		if len(k) > maxLabelKeyLen {
			return status.Errorf(codes.InvalidArgument, "node metadata %s has a label key of %d bytes, more than %d", MetaLabels, len(k), maxLabelKeyLen)
		}
		if n := len(v.GetStringValue()); n > maxLabelValueLen {
			return status.Errorf(codes.InvalidArgument, "node metadata %s label %.64q has a value of %d bytes, more than %d", MetaLabels, k, n, maxLabelValueLen)
		}
	}
	return nil
}

// Bounds on a proxy's locality and NODE_NAME, which split groups while a service has
// a traffic distribution, and on its CLUSTER_ID, which does while a host is
// cluster-local.
const (
	maxLocalityLen = 128
	maxNodeNameLen = 253 // a DNS subdomain, as Kubernetes node names are
)

// checkPlace refuses a locality, NODE_NAME or CLUSTER_ID (Home) that is too long or
// holds a character that separates the parts of a view's key. They split groups
// whatever their value — a cluster need not be in meshNetworks or labelled with a
// network to be a proxy's home — so --xds-max-groups bounds how many there are.
func checkPlace(v *View) error {
	for _, f := range [...]struct {
		field, value string
		max          int
	}{
		{"locality region", v.Locality.Region, maxLocalityLen},
		{"locality zone", v.Locality.Zone, maxLocalityLen},
		{"locality sub_zone", v.Locality.Subzone, maxLocalityLen},
		{"metadata " + MetaNodeName, v.Node, maxNodeNameLen},
		{"metadata " + MetaClusterID, v.NodeCluster, maxNodeNameLen},
		{"metadata " + MetaClusterID, string(v.Home), maxNodeNameLen},
	} {
		if len(f.value) > f.max {
			return status.Errorf(codes.InvalidArgument, "node %s has %d bytes, more than %d", f.field, len(f.value), f.max)
		}
		if i := strings.IndexFunc(f.value, func(r rune) bool { return r == '/' || r == '~' || r < ' ' }); i >= 0 {
			return status.Errorf(codes.InvalidArgument, "node %s %.64q holds %q, which is not allowed there", f.field, f.value, f.value[i])
		}
	}
	return nil
}

// admit checks that Horizon can serve v: every network it names is known, and its
// locality and node are within bounds (checkPlace). A CLUSTER_ID that names no
// known cluster is dropped from v (the proxy is then on the unnamed network, as it
// would be in a cluster with no network). The locality is dropped unless needLoc
// (some service has a traffic distribution), the node unless needNode (some has
// PreferSameNode). kn is nil before the first push: then only views that name no
// network or cluster are served.
func admit(v *View, kn *known, needLoc, needNode bool) error {
	if err := checkPlace(v); err != nil {
		return err
	}
	if !needLoc {
		v.Locality = clusterregistry.Locality{}
	}
	if !needNode {
		v.Node, v.NodeCluster = "", ""
	}
	if kn == nil {
		if v.Network != "" || v.Cluster != "" || len(v.NetworkView) > 0 {
			return status.Error(codes.Unavailable, "no configuration yet: networks not known; retry")
		}
		return nil
	}
	if v.Network != "" && !kn.networks[v.Network] {
		return status.Errorf(codes.InvalidArgument, "unknown network %.64q in node metadata %s", v.Network, MetaNetwork)
	}
	for _, n := range v.NetworkView {
		if !kn.networks[n] {
			return status.Errorf(codes.InvalidArgument, "unknown network %.64q in node metadata %s", n, MetaNetworkView)
		}
	}
	if v.Cluster != "" && !kn.clusters[v.Cluster] {
		v.Cluster = ""
	}
	return nil
}

// errGroupLimit is the refusal of a new view when there are maxGroups groups.
func errGroupLimit(max int) error {
	return status.Error(codes.ResourceExhausted, fmt.Sprintf("proxy group limit (%d) reached: no new network views are served until idle groups are dropped", max))
}
