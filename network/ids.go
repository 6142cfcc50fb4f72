package network

// ClusterID names one Kubernetes cluster. For a remote cluster it is the data key of
// the remote Secret (or the value of its networking.istio.io/cluster annotation); for
// the config cluster it is the --cluster-id flag.
type ClusterID string

// NetworkID names one network: a set of endpoints that can reach each other directly.
type NetworkID string

// Labels and annotations that form Horizon's Istio-compatible contract.
const (
	// LabelMultiCluster marks a Secret in the system namespace as a remote secret.
	LabelMultiCluster = "istio/multiCluster"
	// AnnotationCluster on a remote Secret names the cluster its kubeconfig reaches.
	AnnotationCluster = "networking.istio.io/cluster"
	// LabelNetwork on a pod, the system namespace or a gateway Service names a network.
	LabelNetwork = "topology.istio.io/network"
	// LabelTLSMode on a pod says whether the pod's sidecar accepts Istio mTLS.
	LabelTLSMode = "security.istio.io/tlsMode"
	// TLSModeIstio is the LabelTLSMode value of an mTLS-capable endpoint.
	TLSModeIstio = "istio"
	// LabelSubzone on a node is the subzone part of its locality.
	LabelSubzone = "topology.istio.io/subzone"
)
