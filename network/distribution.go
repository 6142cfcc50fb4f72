package network

// TrafficDistribution says how a service's traffic prefers close endpoints: the
// Kubernetes Service field spec.trafficDistribution, or Istio's annotation
// networking.istio.io/traffic-distribution on the Service or its Namespace.
type TrafficDistribution string

// AnnotationTrafficDistribution on a Service or a Namespace sets the traffic
// distribution of the Service (of every Service in the Namespace) when
// spec.trafficDistribution does not.
const AnnotationTrafficDistribution = "networking.istio.io/traffic-distribution"

// The traffic distributions Horizon serves. PreferClose is Kubernetes' older name of
// PreferSameZone and is served as it.
const (
	// DistributionUnset: no preference, every endpoint in one priority.
	DistributionUnset TrafficDistribution = ""
	// DistributionPreferSameZone ranks endpoints by proximity to the proxy: same
	// network, region, zone and subzone first, other networks' gateways last.
	DistributionPreferSameZone TrafficDistribution = "PreferSameZone"
	// DistributionPreferSameNode puts the endpoints on the proxy's own node first,
	// then ranks the rest as DistributionPreferSameZone.
	DistributionPreferSameNode TrafficDistribution = "PreferSameNode"
)

// maxDistributionLen bounds the length of an unrecognized value that is kept to be
// reported: a Service annotation can be up to 256 KiB.
const maxDistributionLen = 64

// ParseTrafficDistribution reads a spec.trafficDistribution or annotation value:
// PreferClose and PreferSameZone give DistributionPreferSameZone, PreferSameNode
// gives DistributionPreferSameNode (the spellings Kubernetes and Istio accept, case
// as written). Empty gives DistributionUnset and ok; any other value gives
// DistributionUnset and not ok.
func ParseTrafficDistribution(s string) (d TrafficDistribution, ok bool) {
	switch s {
	case "":
		return DistributionUnset, true
	case "PreferClose", "PreferSameZone":
		return DistributionPreferSameZone, true
	case "PreferSameNode":
		return DistributionPreferSameNode, true
	}
	return DistributionUnset, false
}

// TruncateDistribution shortens an unrecognized value for reporting.
func TruncateDistribution(s string) string {
	if len(s) > maxDistributionLen {
		return s[:maxDistributionLen] + "…"
	}
	return s
}
