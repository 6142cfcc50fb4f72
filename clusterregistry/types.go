package clusterregistry

import (
	"time"

	"github.com/horizon-mesh/horizon/network"
)

// Locality is where an endpoint runs.
type Locality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	Subzone string `json:"subzone,omitempty"`
}

// Endpoint is one address behind one service port in one cluster.
type Endpoint struct {
	Address string `json:"address"`
	// Port is the target port the endpoint listens on.
	Port  uint32 `json:"port"`
	Ready bool   `json:"ready"`
	// Locality comes from the node's labels, with the EndpointSlice zone hint as
	// fallback for the zone; nil when none of them is known. Shared by the endpoints
	// of one locality: do not modify. GetLocality reads it.
	Locality *Locality `json:"locality,omitempty"`
	// Labels are the pod's labels (nil for an endpoint without a pod). Shared: do not
	// modify.
	Labels map[string]string `json:"labels,omitempty"`
	// Network is the pod's topology.istio.io/network label, or else that label on the
	// cluster's system namespace; empty when neither is set.
	Network network.NetworkID `json:"network,omitempty"`
	// TLSMode is the pod's security.istio.io/tlsMode label.
	TLSMode        string            `json:"tlsMode,omitempty"`
	ServiceAccount string            `json:"serviceAccount,omitempty"`
	Cluster        network.ClusterID `json:"cluster"`
	// Pod is namespace/name of the backing pod, if any (shared with the pod cache).
	Pod string `json:"pod,omitempty"`
	// Node is the name of the node the endpoint runs on (the pod's, else the
	// EndpointSlice's); empty when unknown.
	Node string `json:"node,omitempty"`
}

// GetLocality returns the endpoint's locality, the zero Locality when it has none.
func (e *Endpoint) GetLocality() Locality {
	if e.Locality == nil {
		return Locality{}
	}
	return *e.Locality
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name     string `json:"name,omitempty"`
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"`
	// TargetPort is the port the Service's pods take this port's traffic on:
	// spec.targetPort when it is a number (Port when unset); when it names a
	// container port, the number this port's endpoints are served at (the one most of
	// them use, the lowest of a tie), or 0 while it has no endpoints.
	TargetPort int32 `json:"targetPort,omitempty"`
	// TargetPortName is spec.targetPort when it names a container port.
	TargetPortName string `json:"targetPortName,omitempty"`
}

// Service is one Kubernetes Service in one cluster.
type Service struct {
	Host      string            `json:"host"`
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Cluster   network.ClusterID `json:"cluster"`
	// Labels are the Service's labels. Shared: do not modify.
	Labels map[string]string `json:"labels,omitempty"`
	// Selector is spec.selector: the labels of the pods the Service sends traffic to
	// (a gateway Service's selects its gateway pods). Empty for a Service without one.
	// Shared: do not modify.
	Selector map[string]string `json:"selector,omitempty"`
	// Annotations are the Service's annotations in an istio.io domain (such as
	// networking.istio.io/gatewayPort); the informers keep no others. Shared: do not
	// modify.
	Annotations map[string]string `json:"annotations,omitempty"`
	Ports       []ServicePort     `json:"ports"`
	// Headless is set when the Service has no cluster IP (spec.clusterIP None); in
	// MCS mode, exports that disagree on it conflict.
	Headless bool `json:"headless,omitempty"`
	// ExternalIPs and LoadBalancer (ingress IPs or hostnames) are where a gateway
	// Service is reachable from outside its cluster.
	ExternalIPs  []string `json:"externalIPs,omitempty"`
	LoadBalancer []string `json:"loadBalancer,omitempty"`
	// TrafficDistribution is the first recognized of spec.trafficDistribution, the
	// Service's networking.istio.io/traffic-distribution annotation and that
	// annotation on its Namespace (network.ParseTrafficDistribution); unset when none
	// is.
	TrafficDistribution network.TrafficDistribution `json:"trafficDistribution,omitempty"`
	// InvalidTrafficDistribution names the first of those that is set to a value
	// Horizon does not recognize, and the value (truncated), for reporting; such a
	// value counts as unset.
	InvalidTrafficDistribution string `json:"invalidTrafficDistribution,omitempty"`
}

// Shard is what one cluster knows of one service.
type Shard struct {
	Service Service `json:"service"`
	// Endpoints by service port number, sorted by address then port.
	Endpoints map[int32][]Endpoint `json:"endpoints"`
}

// Change says that what a cluster knows of a service host changed.
type Change struct {
	Host    string
	Cluster network.ClusterID
}

// SyncState is where a cluster is in its initial sync.
type SyncState string

const (
	// StatePending: not yet synced, no error seen: waiting for its turn to list
	// (ClusterStatus.Waiting), or listing.
	StatePending SyncState = "pending"
	// StateSynced: informers synced and the initial backlog processed.
	StateSynced SyncState = "synced"
	// StateError: not synced, and the last list or watch failed (LastError says why).
	StateError SyncState = "error"
	// StateTimedOut: not synced within the remote cluster timeout. Horizon serves the
	// other clusters and keeps trying this one.
	StateTimedOut SyncState = "timed-out"
	// StateStale: synced, then stopped answering. Its last known endpoints are served
	// until the stale grace passes, then withdrawn; it is probed until it answers,
	// then listed again and back to synced. A stale cluster still counts as synced for
	// readiness.
	StateStale SyncState = "stale"
)

// ClusterStatus describes one cluster for status and debug output. It never holds
// credentials.
type ClusterStatus struct {
	ID       network.ClusterID `json:"id"`
	Source   string            `json:"source"`
	Server   string            `json:"server"`
	State    SyncState         `json:"state"`
	Services int               `json:"services"`
	// Endpoints counts ready endpoints over all services and ports.
	Endpoints int       `json:"endpoints"`
	Started   time.Time `json:"started"`
	// Waiting is set while the cluster waits for its turn to list (the registry's
	// InitialSyncParallelism); its State is then pending.
	Waiting bool `json:"waiting,omitempty"`
	// SyncedAt is when the initial sync finished; zero before. SyncDuration is the
	// sync's length, from the cluster's turn to list.
	SyncedAt     time.Time     `json:"syncedAt,omitempty"`
	SyncDuration time.Duration `json:"syncDuration,omitempty"`
	LastError    string        `json:"lastError,omitempty"`
	LastErrorAt  time.Time     `json:"lastErrorAt,omitempty"`
	// Stale is set while the cluster is unreachable after having synced (State is
	// StateStale); StaleSince is when that was noticed.
	Stale      bool      `json:"stale,omitempty"`
	StaleSince time.Time `json:"staleSince,omitzero"`
	// Withdrawn is set once a stale cluster's endpoints are no longer served, because
	// it stayed unreachable past the stale grace; Services and Endpoints are then 0.
	Withdrawn bool `json:"withdrawn,omitempty"`
	// Network is the topology.istio.io/network label of the cluster's system namespace.
	Network network.NetworkID `json:"network,omitempty"`
	// Scope describes the cluster's discovery selectors ("*": every namespace) and
	// what its caches hold under them.
	Scope ScopeStatus `json:"scope"`
	// ServiceExports says how the cluster's ServiceExports are watched, in MCS mode
	// (Options.MCS); nil otherwise.
	ServiceExports *ExportStatus `json:"serviceExports,omitempty"`
	// APIRequests counts the requests Horizon sent the cluster's API server since the
	// cluster was added, by verb and outcome (credential rotations included); only on
	// the top-level status.
	APIRequests APIRequests `json:"apiRequests,omitempty"`
	// Rotation describes a credential change that is syncing and not yet swapped in.
	Rotation *ClusterStatus `json:"rotation,omitempty"`
}

// ScopeStatus describes which namespaces of a cluster are watched.
type ScopeStatus struct {
	// Selectors are the discovery selectors in force, "|" between them; "*" selects
	// every namespace.
	Selectors string `json:"selectors"`
	// Override is set when the selectors come from the cluster's remote Secret rather
	// than the mesh config.
	Override bool `json:"override,omitempty"`
	// NamespaceWatches counts the namespaces watched one by one; 0 when every
	// namespace is watched at once.
	NamespaceWatches int `json:"namespaceWatches"`
	// CachedServices, CachedEndpointSlices and CachedPods count the objects the
	// cluster's caches hold.
	CachedServices       int `json:"cachedServices"`
	CachedEndpointSlices int `json:"cachedEndpointSlices"`
	CachedPods           int `json:"cachedPods"`
}
