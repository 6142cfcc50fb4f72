package clusterregistry

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/horizon-mesh/horizon/network"
)

// Translation of Services, EndpointSlices, Pods and Nodes into shards: pure
// functions of one cluster's caches, which the worker calls (cluster.go) and tests
// call with caches they fill by hand.

// shardSource is what a service's shard is translated from: one cluster's caches.
type shardSource struct {
	cluster network.ClusterID
	// slices holds EndpointSlices (*cachedSlice) indexed by serviceIndex.
	slices indexReader
	pods   podGetter
	nodes  listersv1.NodeLister
	// network is the system namespace's network label: the network of the endpoints
	// whose pod names none.
	network network.NetworkID
	// nsDistribution is the networking.istio.io/traffic-distribution annotation of
	// the service's namespace.
	nsDistribution string
	// intern shares the endpoints' localities.
	intern *interner
}

// translate returns what src serves for svc under host; nil for an ExternalName
// Service, which has no endpoints. It reads src and svc and changes neither.
//
// An endpoint is served for each service port its slice has a port for (same name
// and protocol), at the slice port's number. Endpoints of FQDN slices, terminating
// endpoints, and endpoints whose pod is not seen yet, gone or terminating are not.
// The pod's labels, service account and network label, and its Ready condition
// when it has one (the slice's otherwise), describe the endpoint. Its locality is
// its node's (the pod's node, else the slice's); the slice's zone hint stands in for
// a zone the node does not have.
//
// The Service keeps its selector, and each port its target port: a named one is
// resolved from that port's endpoints, whose slice ports are numbers. Its traffic
// distribution is the first recognized of spec.trafficDistribution, its annotation
// and its namespace's annotation (trafficDistribution).
func translate(src shardSource, host string, svc *corev1.Service) *Shard {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	shard := &Shard{
		Service: Service{
			Host:        host,
			Name:        svc.Name,
			Namespace:   svc.Namespace,
			Cluster:     src.cluster,
			Labels:      svc.Labels,
			Selector:    svc.Spec.Selector,
			Annotations: svc.Annotations,
			ExternalIPs: append([]string(nil), svc.Spec.ExternalIPs...),
			Headless:    svc.Spec.ClusterIP == corev1.ClusterIPNone,
		},
		Endpoints: map[int32][]Endpoint{},
	}
	shard.Service.TrafficDistribution, shard.Service.InvalidTrafficDistribution = trafficDistribution(svc, src.nsDistribution)
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			shard.Service.LoadBalancer = append(shard.Service.LoadBalancer, in.IP)
		} else if in.Hostname != "" {
			shard.Service.LoadBalancer = append(shard.Service.LoadBalancer, in.Hostname)
		}
	}
	objs, _ := src.slices.ByIndex(serviceIndex, svc.Namespace+"/"+svc.Name)
	// Each port's endpoints are allocated once, for as many as the slices hold: the
	// shards are most of what the registry keeps per endpoint, and appending from
	// empty would leave up to half of each array unused.
	capacity := 0
	for _, obj := range objs {
		if slice, ok := obj.(*cachedSlice); ok {
			capacity += len(slice.Endpoints)
		}
	}
	for _, obj := range objs {
		slice, ok := obj.(*cachedSlice)
		if !ok || slice.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		for _, ep := range slice.Endpoints {
			if ep.Address == "" || ep.Terminating {
				continue
			}
			base := Endpoint{
				Ready:   ep.Ready,
				Cluster: src.cluster,
				Network: src.network,
			}
			nodeName := ep.NodeName
			if podKey, ok := ep.pod(); ok {
				pod := src.pods.getPod(podKey.Namespace, podKey.Name)
				if pod == nil || pod.Deleting {
					// Not seen yet, gone, or terminating: not served. Its arrival
					// re-queues this service through the slices' pod index.
					continue
				}
				base.Pod = pod.Key
				base.Labels = pod.Labels
				base.ServiceAccount = pod.ServiceAccount
				base.TLSMode = pod.Labels[network.LabelTLSMode]
				if n := pod.Labels[network.LabelNetwork]; n != "" {
					base.Network = network.NetworkID(n)
				}
				if pod.NodeName != "" {
					nodeName = pod.NodeName
				}
				if pod.NotReady {
					base.Ready = false
				}
			}
			base.Node = nodeName
			var loc Locality
			if nodeName != "" {
				if node, err := src.nodes.Get(nodeName); err == nil {
					loc = Locality{
						Region:  node.Labels[corev1.LabelTopologyRegion],
						Zone:    node.Labels[corev1.LabelTopologyZone],
						Subzone: node.Labels[network.LabelSubzone],
					}
				}
			}
			if loc.Zone == "" {
				loc.Zone = ep.Zone
			}
			base.Locality = src.intern.locality(loc)
			for _, sp := range svc.Spec.Ports {
				target, ok := slicePort(slice, sp)
				if !ok {
					continue
				}
				e := base
				e.Address = ep.Address
				e.Port = uint32(target)
				eps := shard.Endpoints[sp.Port]
				if eps == nil {
					eps = make([]Endpoint, 0, capacity)
				}
				shard.Endpoints[sp.Port] = append(eps, e)
			}
		}
	}
	for port, eps := range shard.Endpoints {
		shard.Endpoints[port] = dedupe(eps)
	}
	for _, p := range svc.Spec.Ports {
		sp := ServicePort{Name: p.Name, Port: p.Port, Protocol: string(p.Protocol)}
		switch {
		case p.TargetPort.Type == intstr.String:
			sp.TargetPortName = p.TargetPort.StrVal
			sp.TargetPort = commonPort(shard.Endpoints[p.Port])
		case p.TargetPort.IntVal == 0: // unset: the API server defaults it to the port
			sp.TargetPort = p.Port
		default:
			sp.TargetPort = p.TargetPort.IntVal
		}
		shard.Service.Ports = append(shard.Service.Ports, sp)
	}
	return shard
}

// commonPort returns the port most of eps are served at, the lowest of a tie; 0 if
// eps is empty. A named target port is resolved per pod, so pods may differ.
func commonPort(eps []Endpoint) int32 {
	count := map[uint32]int{}
	for _, e := range eps {
		count[e.Port]++
	}
	best := uint32(0)
	for p, n := range count {
		if n > count[best] || (n == count[best] && p < best) {
			best = p
		}
	}
	return int32(best)
}

// slicePort finds the slice port serving service port sp: same name and protocol.
func slicePort(slice *cachedSlice, sp corev1.ServicePort) (int32, bool) {
	for _, p := range slice.Ports {
		name, proto := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		spProto := sp.Protocol
		if spProto == "" {
			spProto = corev1.ProtocolTCP
		}
		if name == sp.Name && proto == spProto && p.Port != nil {
			return *p.Port, true
		}
	}
	return 0, false
}

// dedupe sorts endpoints by address and port and keeps one per pair, preferring a
// ready one: an address can sit in two slices while the endpoint moves between them.
func dedupe(eps []Endpoint) []Endpoint {
	sort.SliceStable(eps, func(i, j int) bool {
		if eps[i].Address != eps[j].Address {
			return eps[i].Address < eps[j].Address
		}
		if eps[i].Port != eps[j].Port {
			return eps[i].Port < eps[j].Port
		}
		return eps[i].Ready && !eps[j].Ready
	})
	out := eps[:0]
	for i, e := range eps {
		if i > 0 && e.Address == eps[i-1].Address && e.Port == eps[i-1].Port {
			continue
		}
		out = append(out, e)
	}
	return out
}

// podGetter finds a pod in a cluster's cache.
type podGetter interface {
	// getPod returns the pod, nil if the cache has none.
	getPod(namespace, name string) *cachedPod
}

// podStore is the pod informer's cache, which holds *cachedPod (trim.go).
type podStore struct{ cache.Indexer }

func (s podStore) getPod(namespace, name string) *cachedPod {
	obj, ok, err := s.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	p, _ := obj.(*cachedPod)
	return p
}

// trafficDistribution returns the first recognized value of svc's
// spec.trafficDistribution, its networking.istio.io/traffic-distribution annotation
// and nsValue (its namespace's annotation); and, when one of them before it (or
// any, when none is recognized) holds a value that is not recognized, where and
// what.
func trafficDistribution(svc *corev1.Service, nsValue string) (network.TrafficDistribution, string) {
	spec := ""
	if svc.Spec.TrafficDistribution != nil {
		spec = *svc.Spec.TrafficDistribution
	}
	invalid := ""
	for _, c := range [...]struct{ where, value string }{
		{"spec.trafficDistribution", spec},
		{"Service annotation " + network.AnnotationTrafficDistribution, svc.Annotations[network.AnnotationTrafficDistribution]},
		{"Namespace annotation " + network.AnnotationTrafficDistribution, nsValue},
	} {
		if c.value == "" {
			continue
		}
		d, ok := network.ParseTrafficDistribution(c.value)
		if ok {
			return d, invalid
		}
		if invalid == "" {
			invalid = fmt.Sprintf("%s %q", c.where, network.TruncateDistribution(c.value))
		}
	}
	return network.DistributionUnset, invalid
}

// namespaceDistribution returns the traffic-distribution annotation of namespace
// name, if it has one.
func namespaceDistribution(namespaces listersv1.NamespaceLister, name string) string {
	ns, err := namespaces.Get(name)
	if err != nil {
		return ""
	}
	return ns.Annotations[network.AnnotationTrafficDistribution]
}

// namespaceNetwork returns the network label of namespace name, if it has one.
func namespaceNetwork(namespaces listersv1.NamespaceLister, name string) network.NetworkID {
	ns, err := namespaces.Get(name)
	if err != nil {
		return ""
	}
	return network.NetworkID(ns.Labels[network.LabelNetwork])
}
