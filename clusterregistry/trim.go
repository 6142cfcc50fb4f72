package clusterregistry

import (
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/horizon-mesh/horizon/network"
)

// Informer transforms: what a cluster's informers cache of Services, EndpointSlices,
// Pods and Nodes (slices and pods as types of their own) is only what translate (shard.go) and the event handlers and
// indexers (watch.go) read, with the strings that repeat across objects (namespaces,
// label keys and values, node names, zones, service accounts, port names) and whole
// label maps shared through an intern table. A field these start to read must be
// kept here too; translateStores in the tests translates every case from trimmed and
// untrimmed caches and fails when they differ.
//
// A transform runs on the informer's goroutine before the object is stored; the
// objects it returns are shared (their maps, pointers and slices) and must not be
// modified, as informer caches never are.

// defaultInternLimit bounds the entries of one generation of an intern table: two
// generations, each at most this many strings and label maps, are held at once.
const defaultInternLimit = 1 << 16

// interner shares equal strings and equal label maps. It is bounded: when the current
// generation is full it becomes the previous one and the one before is dropped, so
// values that stopped being looked up (deleted pods' labels, nodes gone) are let go
// after at most two generations, while values still in use move to the new one when
// next looked up. Values handed out stay valid; only their sharing ends.
//
// interner is safe for concurrent use.
type interner struct {
	limit int

	mu         sync.Mutex
	strs, prev map[string]string            // guarded by mu
	maps, pmap map[string]map[string]string // guarded by mu; keyed by labelKey
	ptrs, pptr map[string]*string           // guarded by mu
	locs, ploc map[Locality]*Locality       // guarded by mu
}

func newInterner(limit int) *interner {
	if limit <= 0 {
		limit = defaultInternLimit
	}
	return &interner{
		limit: limit,
		strs:  map[string]string{},
		maps:  map[string]map[string]string{},
		ptrs:  map[string]*string{},
		locs:  map[Locality]*Locality{},
	}
}

// size is the number of entries held over both generations.
func (in *interner) size() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.strs) + len(in.prev) + len(in.maps) + len(in.pmap) + len(in.ptrs) + len(in.pptr) +
		len(in.locs) + len(in.ploc)
}

// rotate starts a new generation if the current one is full; in.mu is held.
func (in *interner) rotate() {
	if len(in.strs)+len(in.maps)+len(in.ptrs)+len(in.locs) < in.limit {
		return
	}
	in.prev, in.pmap, in.pptr, in.ploc = in.strs, in.maps, in.ptrs, in.locs
	in.strs = make(map[string]string, len(in.prev))
	in.maps = make(map[string]map[string]string, len(in.pmap))
	in.ptrs = make(map[string]*string, len(in.pptr))
	in.locs = make(map[Locality]*Locality, len(in.ploc))
}

// str returns a string equal to s, shared with earlier calls.
func (in *interner) str(s string) string {
	if s == "" {
		return ""
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.strLocked(s)
}

func (in *interner) strLocked(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := in.strs[s]; ok {
		return v
	}
	in.rotate()
	if v, ok := in.prev[s]; ok {
		s = v
	} else {
		s = strings.Clone(s) // not pinning the decoded object's buffer
	}
	in.strs[s] = s
	return s
}

// ptr returns a pointer to a string equal to *p, shared with earlier calls; nil for
// nil.
func (in *interner) ptr(p *string) *string {
	if p == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := in.ptrs[*p]; ok {
		return v
	}
	v, ok := in.pptr[*p]
	if !ok {
		s := in.strLocked(*p)
		v = &s
	}
	in.rotate()
	in.ptrs[*v] = v
	return v
}

// locality returns a pointer to a Locality equal to l, shared with earlier calls;
// nil for the zero Locality. The endpoints of one zone share one: a pointer is 40
// bytes less per endpoint than the three strings.
func (in *interner) locality(l Locality) *Locality {
	if l == (Locality{}) {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := in.locs[l]; ok {
		return v
	}
	v, ok := in.ploc[l]
	if !ok {
		v = &Locality{Region: in.strLocked(l.Region), Zone: in.strLocked(l.Zone), Subzone: in.strLocked(l.Subzone)}
	}
	in.rotate()
	in.locs[*v] = v
	return v
}

// labels returns a map equal to m, shared with earlier calls with equal maps; nil for
// an empty map.
func (in *interner) labels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	key := labelKey(m)
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := in.maps[key]; ok {
		return v
	}
	v, ok := in.pmap[key]
	if !ok {
		v = make(map[string]string, len(m))
		for k, val := range m {
			v[in.strLocked(k)] = in.strLocked(val)
		}
	}
	in.rotate()
	in.maps[strings.Clone(key)] = v
	return v
}

// labelKey encodes m as its sorted keys and values, each followed by a NUL byte (no
// label key or value holds one).
func labelKey(m map[string]string) string {
	keys := make([]string, 0, len(m))
	n := 0
	for k, v := range m {
		keys = append(keys, k)
		n += len(k) + len(v) + 2
	}
	slices.Sort(keys)
	var b strings.Builder
	b.Grow(n)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
		b.WriteByte(0)
	}
	return b.String()
}

// trimmer holds the informer transforms of a registry's clusters; they share its
// intern table.
type trimmer struct {
	in *interner
	// yes and no are shared by every trimmed *bool.
	yes, no *bool
}

func newTrimmer(in *interner) *trimmer {
	yes, no := true, false
	return &trimmer{in: in, yes: &yes, no: &no}
}

func (t *trimmer) bool(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return t.yes
	default:
		return t.no
	}
}

// meta keeps name, namespace and resource version (the handlers skip resyncs by it);
// labels and annotations are the caller's.
func (t *trimmer) meta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            m.Name,
		Namespace:       t.in.str(m.Namespace),
		ResourceVersion: m.ResourceVersion,
	}
}

// service keeps what translate and the gateway discovery read of a Service: labels,
// the Istio annotations (keys in an istio.io domain), type, headlessness, selector, ports,
// traffic distribution, external IPs and load balancer ingress addresses.
func (t *trimmer) service(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	out := &corev1.Service{ObjectMeta: t.meta(&s.ObjectMeta)}
	out.Labels = t.in.labels(s.Labels)
	out.Annotations = t.in.labels(istioAnnotations(s.Annotations))
	out.Spec.Type = s.Spec.Type
	if s.Spec.ClusterIP == corev1.ClusterIPNone {
		out.Spec.ClusterIP = corev1.ClusterIPNone // headless; any other address is not read
	}
	out.Spec.Selector = t.in.labels(s.Spec.Selector)
	out.Spec.ExternalIPs = s.Spec.ExternalIPs
	out.Spec.TrafficDistribution = t.in.ptr(s.Spec.TrafficDistribution)
	if len(s.Spec.Ports) > 0 {
		out.Spec.Ports = make([]corev1.ServicePort, len(s.Spec.Ports))
		for i, p := range s.Spec.Ports {
			out.Spec.Ports[i] = corev1.ServicePort{
				Name:       t.in.str(p.Name),
				Protocol:   corev1.Protocol(t.in.str(string(p.Protocol))),
				Port:       p.Port,
				TargetPort: p.TargetPort,
			}
			out.Spec.Ports[i].TargetPort.StrVal = t.in.str(p.TargetPort.StrVal)
		}
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress,
			corev1.LoadBalancerIngress{IP: in.IP, Hostname: in.Hostname})
	}
	return out, nil
}

// istioAnnotations returns the annotations of m whose key is in an istio.io domain
// (networking.istio.io/gatewayPort and the like); nil when none is.
func istioAnnotations(m map[string]string) map[string]string {
	var out map[string]string
	for k, v := range m {
		domain, _, ok := strings.Cut(k, "/")
		if ok && (domain == "istio.io" || strings.HasSuffix(domain, ".istio.io")) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// cachedSlice is what a cluster's EndpointSlice informer caches of a slice: a
// discoveryv1.Endpoint with its target reference takes over 200 bytes, twice what
// translate reads of it.
type cachedSlice struct {
	Name, Namespace, ResourceVersion string
	// Service is the kubernetes.io/service-name label; empty when the slice has none.
	Service     string
	AddressType discoveryv1.AddressType
	// Ports are shared: do not modify.
	Ports     []discoveryv1.EndpointPort
	Endpoints []cachedEndpoint
}

// cachedEndpoint is what a cachedSlice keeps of one endpoint.
type cachedEndpoint struct {
	// Address is the endpoint's first address; empty when it has none.
	Address string
	// PodNamespace and PodName name the pod of the target reference when PodRef is
	// set (its kind is Pod); PodNamespace is the slice's when the reference names
	// none.
	PodNamespace, PodName string
	NodeName, Zone        string
	PodRef                bool
	// Ready is the Ready condition, true when unset (ready unless it says not);
	// Terminating is the Terminating condition, false when unset.
	Ready, Terminating bool
}

// GetObjectMeta gives the informer's key and index functions and the handlers the
// slice's name, namespace and resource version.
func (s *cachedSlice) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, ResourceVersion: s.ResourceVersion}
}

// pod returns the pod the endpoint's target reference names, if it names one.
func (e *cachedEndpoint) pod() (types.NamespacedName, bool) {
	return types.NamespacedName{Namespace: e.PodNamespace, Name: e.PodName}, e.PodRef
}

// slice turns an EndpointSlice into a cachedSlice: the service-name label, address
// type, ports, and per endpoint its first address, Ready and Terminating
// conditions, node, zone and the pod its target reference names.
func (t *trimmer) slice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &cachedSlice{
		Name:            s.Name,
		Namespace:       t.in.str(s.Namespace),
		ResourceVersion: s.ResourceVersion,
		Service:         t.in.str(s.Labels[discoveryv1.LabelServiceName]),
		AddressType:     discoveryv1.AddressType(t.in.str(string(s.AddressType))),
	}
	if len(s.Ports) > 0 {
		out.Ports = make([]discoveryv1.EndpointPort, len(s.Ports))
		for i, p := range s.Ports {
			out.Ports[i] = discoveryv1.EndpointPort{Name: t.in.ptr(p.Name), Port: p.Port, Protocol: p.Protocol}
		}
	}
	if len(s.Endpoints) > 0 {
		out.Endpoints = make([]cachedEndpoint, len(s.Endpoints))
		for i, ep := range s.Endpoints {
			e := cachedEndpoint{
				Ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				Terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
			}
			if len(ep.Addresses) > 0 {
				e.Address = ep.Addresses[0]
			}
			if ep.NodeName != nil {
				e.NodeName = t.in.str(*ep.NodeName)
			}
			if ep.Zone != nil {
				e.Zone = t.in.str(*ep.Zone)
			}
			if r := ep.TargetRef; r != nil && r.Kind == "Pod" {
				e.PodRef, e.PodNamespace, e.PodName = true, out.Namespace, r.Name
				if r.Namespace != "" {
					e.PodNamespace = t.in.str(r.Namespace)
				}
			}
			out.Endpoints[i] = e
		}
	}
	return out, nil
}

// cachedPod is what a cluster's pod informer caches of a pod: a corev1.Pod takes over
// 1 KB however little of it is set, several times what translate reads of it.
type cachedPod struct {
	// Key is namespace/name (neither holds a "/"); served endpoints share it, and
	// namespace and name are read from it.
	Key, ResourceVersion string
	// Labels are shared: do not modify.
	Labels         map[string]string
	NodeName       string
	ServiceAccount string
	// Deleting: the pod has a deletion timestamp.
	Deleting bool
	// NotReady: the pod has a Ready condition whose status is not True. A pod without
	// one defers to the EndpointSlice.
	NotReady bool
}

// namespace returns the pod's namespace.
func (p *cachedPod) namespace() string {
	ns, _, _ := strings.Cut(p.Key, "/")
	return ns
}

// name returns the pod's name.
func (p *cachedPod) name() string {
	_, name, _ := strings.Cut(p.Key, "/")
	return name
}

// GetObjectMeta gives the informer's key function and handlers the pod's name,
// namespace and resource version.
func (p *cachedPod) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: p.name(), Namespace: p.namespace(), ResourceVersion: p.ResourceVersion}
}

// pod turns a Pod into a cachedPod: labels, node, service account, whether it is
// being deleted and its Ready condition.
func (t *trimmer) pod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &cachedPod{
		Key:             p.Namespace + "/" + p.Name,
		ResourceVersion: p.ResourceVersion,
		Labels:          t.in.labels(p.Labels),
		NodeName:        t.in.str(p.Spec.NodeName),
		ServiceAccount:  t.in.str(p.Spec.ServiceAccountName),
		Deleting:        p.DeletionTimestamp != nil,
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			out.NotReady = cond.Status != corev1.ConditionTrue
		}
	}
	return out, nil
}

// node keeps the name and the locality labels.
func (t *trimmer) node(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: t.meta(&n.ObjectMeta)}
	out.Name = t.in.str(n.Name)
	var keep map[string]string
	for _, k := range [...]string{corev1.LabelTopologyRegion, corev1.LabelTopologyZone, network.LabelSubzone} {
		if v, ok := n.Labels[k]; ok {
			if keep == nil {
				keep = map[string]string{}
			}
			keep[k] = v
		}
	}
	out.Labels = t.in.labels(keep)
	return out, nil
}
