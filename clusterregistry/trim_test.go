package clusterregistry

import (
	"fmt"
	"reflect"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/horizon-mesh/horizon/network"
)

// TestTrimKeepsOnlyWhatIsRead checks what each transform keeps of an object as the
// API server lists it. That translation still works from what is kept is checked by
// every translate test (translateStores).
func TestTrimKeepsOnlyWhatIsRead(t *testing.T) {
	deleted := metav1.Now()
	meta := func(name, ns string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name: name, Namespace: ns, ResourceVersion: "7", UID: "uid-1", Generation: 3,
			Annotations:     map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{…}"},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-abc"}},
			Finalizers:      []string{"example.com/f"},
		}
	}
	trim := newTrimmer(newInterner(0))
	tests := []struct {
		name string
		fn   func(any) (any, error)
		in   any
		want any
	}{
		{
			name: "headless service",
			fn:   trim.service,
			in: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: testNS, ResourceVersion: "7"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone, ClusterIPs: []string{corev1.ClusterIPNone}}},
			want: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: testNS, ResourceVersion: "7"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone}},
		},
		{
			name: "service",
			fn:   trim.service,
			in: func() *corev1.Service {
				s := &corev1.Service{ObjectMeta: meta("web", testNS)}
				s.Labels = map[string]string{"app": "web", network.LabelNetwork: "net-1"}
				s.Annotations["networking.istio.io/gatewayPort"] = "15443"
				s.Annotations["networking.istio.io/traffic-distribution"] = "PreferClose"
				s.Annotations["example.com/istio.io"] = "not an istio.io domain"
				s.Spec = corev1.ServiceSpec{
					Type:        corev1.ServiceTypeLoadBalancer,
					Selector:    map[string]string{"app": "web"},
					ClusterIP:   "10.96.0.10",
					ClusterIPs:  []string{"10.96.0.10"},
					ExternalIPs: []string{"192.0.2.1"},
					Ports: []corev1.ServicePort{{
						Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080,
						TargetPort: intstr.FromString("http-web"), AppProtocol: ptr.To("http"),
					}},
					SessionAffinity:     corev1.ServiceAffinityClientIP,
					TrafficDistribution: ptr.To("PreferSameNode"),
				}
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
					{IP: "192.0.2.2", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP), Ports: []corev1.PortStatus{{Port: 80}}},
					{Hostname: "lb.example.com"},
				}
				return s
			}(),
			want: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{
					Name: "web", Namespace: testNS, ResourceVersion: "7",
					Labels: map[string]string{"app": "web", network.LabelNetwork: "net-1"},
					Annotations: map[string]string{
						"networking.istio.io/gatewayPort":          "15443",
						"networking.istio.io/traffic-distribution": "PreferClose",
					},
				},
				Spec: corev1.ServiceSpec{
					Type:                corev1.ServiceTypeLoadBalancer,
					Selector:            map[string]string{"app": "web"},
					ExternalIPs:         []string{"192.0.2.1"},
					TrafficDistribution: ptr.To("PreferSameNode"),
					Ports: []corev1.ServicePort{{
						Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http-web"),
					}},
				},
				Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
					{IP: "192.0.2.2"}, {Hostname: "lb.example.com"},
				}}},
			},
		},
		{
			name: "endpoint slice",
			fn:   trim.slice,
			in: func() *discoveryv1.EndpointSlice {
				s := slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "node-a"))
				s.ObjectMeta = meta("web-x", testNS)
				s.Labels = map[string]string{discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}
				s.Ports[0].AppProtocol = ptr.To("http")
				ep := &s.Endpoints[0]
				ep.Addresses = append(ep.Addresses, "10.0.0.2")
				ep.Conditions.Serving = ptr.To(true)
				ep.Conditions.Terminating = ptr.To(false)
				ep.Hostname = ptr.To("web-1")
				ep.Zone = ptr.To("zone-a")
				ep.TargetRef.UID, ep.TargetRef.ResourceVersion = "pod-uid", "5"
				ep.DeprecatedTopology = map[string]string{"kubernetes.io/hostname": "node-a"}
				ep.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-a"}}}
				return s
			}(),
			want: &cachedSlice{
				Name: "web-x", Namespace: testNS, ResourceVersion: "7", Service: "web",
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
				Endpoints: []cachedEndpoint{{
					Address: "10.0.0.1", PodRef: true, PodNamespace: testNS, PodName: "web-1",
					NodeName: "node-a", Zone: "zone-a", Ready: true,
				}},
			},
		},
		{
			name: "pod",
			fn:   trim.pod,
			in: func() *corev1.Pod {
				p := pod("web-1", "node-a", map[string]string{"app": "web"})
				p.ObjectMeta = meta("web-1", testNS)
				p.Labels = map[string]string{"app": "web"}
				p.DeletionTimestamp = &deleted
				p.Spec.Containers = []corev1.Container{{Name: "app", Image: "registry.invalid/app"}}
				p.Status.Phase = corev1.PodRunning
				p.Status.PodIP, p.Status.PodIPs = "10.0.0.1", []corev1.PodIP{{IP: "10.0.0.1"}}
				p.Status.Conditions = []corev1.PodCondition{
					{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
					{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", LastTransitionTime: deleted},
				}
				return p
			}(),
			want: &cachedPod{
				Key: testNS + "/web-1", ResourceVersion: "7", Labels: map[string]string{"app": "web"},
				NodeName: "node-a", ServiceAccount: "sa", Deleting: true, NotReady: true,
			},
		},
		{
			name: "node",
			fn:   trim.node,
			in: func() *corev1.Node {
				n := node("node-a", "region-1", "zone-a")
				n.ObjectMeta = meta("node-a", "")
				n.Labels = map[string]string{
					corev1.LabelTopologyRegion: "region-1", corev1.LabelTopologyZone: "zone-a",
					network.LabelSubzone: "rack-1", corev1.LabelHostname: "node-a", corev1.LabelOSStable: "linux",
				}
				n.Spec.PodCIDR = "10.0.0.0/24"
				n.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.invalid/app"}, SizeBytes: 1 << 20}}
				return n
			}(),
			want: &corev1.Node{ObjectMeta: metav1.ObjectMeta{
				Name: "node-a", ResourceVersion: "7",
				Labels: map[string]string{corev1.LabelTopologyRegion: "region-1", corev1.LabelTopologyZone: "zone-a", network.LabelSubzone: "rack-1"},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.fn(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("trimmed to\n%+v\nwant\n%+v", got, tt.want)
			}
			again, err := tt.fn(got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, got) {
				t.Errorf("trimming again gives\n%+v\nwant\n%+v", again, got)
			}
			// A tombstone or another type passes through.
			tomb := "not an object"
			if out, err := tt.fn(tomb); err != nil || out != tomb {
				t.Errorf("transform of a string = %v, %v", out, err)
			}
		})
	}
}

// TestTrimSharesRepeatedValues checks that the pods of a service, as two clusters'
// informers list them, share their label maps, namespaces, node names and service
// accounts.
func TestTrimSharesRepeatedValues(t *testing.T) {
	trim := newTrimmer(newInterner(0))
	var pods []*cachedPod
	for i := range 4 {
		// Every object decoded on its own, as from separate lists.
		p := pod(fmt.Sprintf("web-%d", i), string([]byte("node-a")), map[string]string{
			string([]byte("app")): string([]byte("web")), string([]byte("version")): string([]byte("v1")),
		})
		p.Namespace = string([]byte(testNS))
		out, err := trim.pod(p)
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, out.(*cachedPod))
	}
	sameString := func(what, a, b string) {
		t.Helper()
		if unsafe.StringData(a) != unsafe.StringData(b) {
			t.Errorf("%s %q not shared", what, a)
		}
	}
	for _, p := range pods[1:] {
		if reflect.ValueOf(p.Labels).UnsafePointer() != reflect.ValueOf(pods[0].Labels).UnsafePointer() {
			t.Errorf("labels of %s not shared", p.Key)
		}
		sameString("node", p.NodeName, pods[0].NodeName)
		sameString("service account", p.ServiceAccount, pods[0].ServiceAccount)
	}
	s1, _ := trim.slice(slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "node-a")))
	s2, _ := trim.slice(slice("web-y", "web", podEndpoint("10.0.0.2", "web-2", "node-a")))
	e1, e2 := s1.(*cachedSlice).Endpoints[0], s2.(*cachedSlice).Endpoints[0]
	sameString("node of two slice endpoints", e1.NodeName, e2.NodeName)
	sameString("node of a slice endpoint and a pod", e1.NodeName, pods[0].NodeName)
	sameString("pod namespace of two slice endpoints", e1.PodNamespace, e2.PodNamespace)
}

// TestInternerBounded checks that churning through distinct values keeps the table
// within two generations, and that a value still in use stays shared across
// generations.
func TestInternerBounded(t *testing.T) {
	const limit = 100
	in := newInterner(limit)
	hot := in.str(string([]byte("zone-a")))
	hotLabels := in.labels(map[string]string{"app": "web"})
	hotLocality := in.locality(Locality{Region: "r", Zone: "zone-a"})
	for i := range 50 * limit {
		in.str(fmt.Sprintf("pod-%d", i))
		in.labels(map[string]string{"pod-template-hash": fmt.Sprint(i)})
		in.ptr(ptr.To(fmt.Sprintf("node-%d", i)))
		in.locality(Locality{Region: "r", Zone: fmt.Sprintf("zone-%d", i)})
		if n := in.size(); n > 2*limit {
			t.Fatalf("after %d values the table holds %d entries, over 2×%d", i+1, n, limit)
		}
		if i%5 == 0 { // in use: looked up again within every generation
			if got := in.str(string([]byte("zone-a"))); unsafe.StringData(got) != unsafe.StringData(hot) {
				t.Fatalf("a value in use lost its sharing after %d values", i+1)
			}
			if got := in.labels(map[string]string{"app": "web"}); reflect.ValueOf(got).UnsafePointer() != reflect.ValueOf(hotLabels).UnsafePointer() {
				t.Fatalf("labels in use lost their sharing after %d values", i+1)
			}
			if got := in.locality(Locality{Region: "r", Zone: "zone-a"}); got != hotLocality {
				t.Fatalf("a locality in use lost its sharing after %d values", i+1)
			}
		}
	}
}

// TestTranslateSharesLocalityAndPodKey checks that the endpoints of one locality
// share one Locality, equal to what they were translated from, that an endpoint
// without one has none, and that an endpoint's Pod is its cached pod's key.
func TestTranslateSharesLocalityAndPodKey(t *testing.T) {
	s := newStores()
	s.trim = newTrimmer(newInterner(0))
	objs := []any{node("node-a", "region-1", "zone-a"), node("node-b", "region-1", "zone-a"), node("node-c", "region-1", "zone-c")}
	var eps []discoveryv1.Endpoint
	for i, n := range []string{"node-a", "node-b", "node-c", ""} {
		name := fmt.Sprintf("web-%d", i)
		eps = append(eps, podEndpoint(fmt.Sprintf("10.0.0.%d", i+1), name, ""))
		objs = append(objs, pod(name, n, map[string]string{"app": "web"}))
	}
	objs = append(objs, slice("web-x", "web", eps...))
	shard := translateFrom(t, s, service("web"), "", objs...)
	got := shard.Endpoints[80]
	if len(got) != 4 {
		t.Fatalf("endpoints = %+v, want 4", got)
	}
	for i, want := range []Locality{{Region: "region-1", Zone: "zone-a"}, {Region: "region-1", Zone: "zone-a"}, {Region: "region-1", Zone: "zone-c"}, {}} {
		if l := got[i].GetLocality(); l != want {
			t.Errorf("endpoint %d: locality %+v, want %+v", i, l, want)
		}
	}
	if got[0].Locality != got[1].Locality {
		t.Errorf("endpoints of one zone on two nodes hold two Localities")
	}
	if got[3].Locality != nil {
		t.Errorf("endpoint without a node: locality %+v, want nil", *got[3].Locality)
	}
	for _, e := range got {
		p := s.watchSet().pods.getPod(testNS, e.Pod[len(testNS)+1:])
		if p == nil || e.Pod != testNS+"/"+p.name() || unsafe.StringData(e.Pod) != unsafe.StringData(p.Key) {
			t.Errorf("endpoint %s: pod %q is not its cached pod's key", e.Address, e.Pod)
		}
	}
}
