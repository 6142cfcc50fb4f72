package clusterregistry

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/horizon-mesh/horizon/network"
)

const testHost = "web.sample.svc.cluster.local"

// translateStores translates svc from caches holding objs. It translates them again
// through the informer transforms (trim.go), as a cluster's informers store them,
// and fails the test when the two differ: the transforms must keep everything
// translate reads.
func translateStores(t *testing.T, svc *corev1.Service, nsNetwork network.NetworkID, objs ...any) *Shard {
	t.Helper()
	full := translateFrom(t, newStores(), svc, nsNetwork, objs...)
	trim := newTrimmer(newInterner(0))
	s := newStores()
	s.trim = trim
	tsvc, err := trim.service(svc)
	if err != nil {
		t.Fatal(err)
	}
	if trimmed := translateFrom(t, s, tsvc.(*corev1.Service), nsNetwork, objs...); !reflect.DeepEqual(trimmed, full) {
		t.Errorf("translated from trimmed objects:\n%+v\nfrom the objects as listed:\n%+v", trimmed, full)
	}
	return full
}

func translateFrom(t *testing.T, s *stores, svc *corev1.Service, nsNetwork network.NetworkID, objs ...any) *Shard {
	t.Helper()
	s.add(t, objs...)
	ws := s.watchSet()
	return translate(shardSource{
		cluster: "c1",
		slices:  ws.slices,
		pods:    ws.pods,
		nodes:   ws.nodes,
		network: nsNetwork,
		intern:  newInterner(0),
	}, testHost, svc)
}

// served is the endpoint translate makes of a ready pod web-N with service account
// "sa", no network and no locality.
func served(ip string, port uint32, podName string, labels map[string]string) Endpoint {
	return Endpoint{
		Address: ip, Port: port, Ready: true, Cluster: "c1",
		Pod: testNS + "/" + podName, Labels: labels, ServiceAccount: "sa",
	}
}

func with(e Endpoint, edit func(*Endpoint)) Endpoint {
	edit(&e)
	return e
}

func TestTranslateEndpoints(t *testing.T) {
	httpPort := corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}
	grpcPort := corev1.ServicePort{Name: "grpc", Port: 7070, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(17070)}
	v1 := map[string]string{"app": "web", "version": "v1"}
	mtls := map[string]string{"app": "web", network.LabelTLSMode: network.TLSModeIstio}
	onNet := map[string]string{"app": "web", network.LabelNetwork: "net-pod"}

	withPorts := func(s *discoveryv1.EndpointSlice, ports ...discoveryv1.EndpointPort) *discoveryv1.EndpointSlice {
		s.Ports = ports
		return s
	}
	slicePort := func(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
		return discoveryv1.EndpointPort{Name: ptr.To(name), Port: ptr.To(port), Protocol: ptr.To(proto)}
	}
	ipv6 := func(s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
		s.AddressType = discoveryv1.AddressTypeIPv6
		return s
	}
	edit := func(ep discoveryv1.Endpoint, f func(*discoveryv1.Endpoint)) discoveryv1.Endpoint {
		f(&ep)
		return ep
	}
	editPod := func(p *corev1.Pod, f func(*corev1.Pod)) *corev1.Pod {
		f(p)
		return p
	}
	zoneless := node("node-b", "region-1", "")
	subzoned := node("node-c", "region-2", "zone-c")
	subzoned.Labels[network.LabelSubzone] = "rack-7"

	tests := []struct {
		name      string
		svc       *corev1.Service // service("web") when nil
		nsNetwork network.NetworkID
		objs      []any
		want      map[int32][]Endpoint
	}{
		{
			name: "named target port: the slice's port number",
			svc: service("web", corev1.ServicePort{
				Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("web-http"),
			}),
			objs: []any{slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "")), pod("web-1", "", v1)},
			want: map[int32][]Endpoint{80: {served("10.0.0.1", 8080, "web-1", v1)}},
		},
		{
			name: "several ports, each by name and protocol",
			svc: service("web", httpPort, grpcPort,
				corev1.ServicePort{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}),
			objs: []any{
				withPorts(slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "")),
					slicePort("http", 8080, corev1.ProtocolTCP),
					slicePort("grpc", 17070, corev1.ProtocolTCP),
					slicePort("dns", 5353, corev1.ProtocolTCP)), // not the service's UDP port
				pod("web-1", "", v1),
			},
			want: map[int32][]Endpoint{
				80:   {served("10.0.0.1", 8080, "web-1", v1)},
				7070: {served("10.0.0.1", 17070, "web-1", v1)},
			},
		},
		{
			name: "unnamed port, protocol defaulting to TCP",
			svc:  service("web", corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(8080)}),
			objs: []any{
				withPorts(slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "")),
					discoveryv1.EndpointPort{Port: ptr.To[int32](8080)}),
				pod("web-1", "", v1),
			},
			want: map[int32][]Endpoint{80: {served("10.0.0.1", 8080, "web-1", v1)}},
		},
		{
			name: "terminating endpoints and pods are not served",
			objs: []any{
				slice("web-x", "web",
					podEndpoint("10.0.0.1", "web-1", ""),
					edit(podEndpoint("10.0.0.2", "web-2", ""), func(e *discoveryv1.Endpoint) {
						e.Conditions.Terminating = ptr.To(true)
					}),
					podEndpoint("10.0.0.3", "web-3", "")),
				pod("web-1", "", v1), pod("web-2", "", v1),
				editPod(pod("web-3", "", v1), func(p *corev1.Pod) {
					p.DeletionTimestamp = &metav1.Time{}
				}),
			},
			want: map[int32][]Endpoint{80: {served("10.0.0.1", 8080, "web-1", v1)}},
		},
		{
			name: "not ready: by the slice, or by the pod's Ready condition",
			objs: []any{
				slice("web-x", "web",
					edit(podEndpoint("10.0.0.1", "web-1", ""), func(e *discoveryv1.Endpoint) {
						e.Conditions.Ready = ptr.To(false)
					}),
					podEndpoint("10.0.0.2", "web-2", ""),
					podEndpoint("10.0.0.3", "web-3", ""),
					edit(podEndpoint("10.0.0.4", "web-4", ""), func(e *discoveryv1.Endpoint) {
						e.Conditions.Ready = nil
					})),
				pod("web-1", "", v1),
				editPod(pod("web-2", "", v1), func(p *corev1.Pod) {
					p.Status.Conditions[0].Status = corev1.ConditionFalse
				}),
				editPod(pod("web-3", "", v1), func(p *corev1.Pod) { p.Status.Conditions = nil }),
				pod("web-4", "", v1),
			},
			want: map[int32][]Endpoint{80: {
				with(served("10.0.0.1", 8080, "web-1", v1), func(e *Endpoint) { e.Ready = false }),
				with(served("10.0.0.2", 8080, "web-2", v1), func(e *Endpoint) { e.Ready = false }),
				served("10.0.0.3", 8080, "web-3", v1), // no condition: the slice says ready
				served("10.0.0.4", 8080, "web-4", v1), // the slice says nothing
			}},
		},
		{
			name:      "pods not seen yet are not served; endpoints without a pod are",
			nsNetwork: "net-ns",
			objs: []any{
				slice("web-x", "web",
					podEndpoint("10.0.0.1", "web-1", ""),
					discoveryv1.Endpoint{Addresses: []string{"10.0.0.9"}},
					discoveryv1.Endpoint{}), // no address
			},
			want: map[int32][]Endpoint{80: {
				{Address: "10.0.0.9", Port: 8080, Ready: true, Cluster: "c1", Network: "net-ns"},
			}},
		},
		{
			name: "a targetRef without namespace is in the slice's",
			objs: []any{
				slice("web-x", "web", edit(podEndpoint("10.0.0.1", "web-1", ""), func(e *discoveryv1.Endpoint) {
					e.TargetRef.Namespace = ""
				})),
				pod("web-1", "", v1),
			},
			want: map[int32][]Endpoint{80: {served("10.0.0.1", 8080, "web-1", v1)}},
		},
		{
			name: "FQDN slices are not served",
			objs: []any{
				func() *discoveryv1.EndpointSlice {
					s := slice("web-fqdn", "web", discoveryv1.Endpoint{Addresses: []string{"web.example.com"}})
					s.AddressType = discoveryv1.AddressTypeFQDN
					return s
				}(),
				slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", "")),
				pod("web-1", "", v1),
			},
			want: map[int32][]Endpoint{80: {served("10.0.0.1", 8080, "web-1", v1)}},
		},
		{
			name: "dual stack: one endpoint per address family, sorted",
			objs: []any{
				ipv6(slice("web-v6", "web", podEndpoint("fd00::1", "web-1", ""), podEndpoint("fd00::2", "web-2", ""))),
				slice("web-v4", "web", podEndpoint("10.0.0.2", "web-2", ""), podEndpoint("10.0.0.1", "web-1", "")),
				pod("web-1", "", v1), pod("web-2", "", mtls),
			},
			want: map[int32][]Endpoint{80: {
				served("10.0.0.1", 8080, "web-1", v1),
				with(served("10.0.0.2", 8080, "web-2", mtls), func(e *Endpoint) { e.TLSMode = network.TLSModeIstio }),
				served("fd00::1", 8080, "web-1", v1),
				with(served("fd00::2", 8080, "web-2", mtls), func(e *Endpoint) { e.TLSMode = network.TLSModeIstio }),
			}},
		},
		{
			name: "an address in two slices once, the ready one",
			objs: []any{
				slice("web-old", "web", edit(podEndpoint("10.0.0.1", "web-1", ""), func(e *discoveryv1.Endpoint) {
					e.Conditions.Ready = ptr.To(false)
				})),
				slice("web-new", "web", podEndpoint("10.0.0.1", "web-1", "")),
				pod("web-1", "", v1),
			},
			want: map[int32][]Endpoint{80: {served("10.0.0.1", 8080, "web-1", v1)}},
		},
		{
			name: "locality and node: node labels, the slice's zone hint in place of a zone the node lacks",
			objs: []any{
				slice("web-x", "web",
					edit(podEndpoint("10.0.0.1", "web-1", "node-a"), func(e *discoveryv1.Endpoint) {
						e.Zone = ptr.To("hinted") // the node's own zone wins
					}),
					edit(podEndpoint("10.0.0.2", "web-2", "node-b"), func(e *discoveryv1.Endpoint) {
						e.Zone = ptr.To("hinted")
					}),
					edit(podEndpoint("10.0.0.3", "web-3", "node-unknown"), func(e *discoveryv1.Endpoint) {
						e.Zone = ptr.To("hinted")
					}),
					podEndpoint("10.0.0.4", "web-4", "node-a")), // the pod's node wins
				node("node-a", "region-1", "zone-a"), zoneless, subzoned,
				pod("web-1", "", v1), pod("web-2", "", v1), pod("web-3", "", v1), pod("web-4", "node-c", v1),
			},
			want: map[int32][]Endpoint{80: {
				with(served("10.0.0.1", 8080, "web-1", v1), func(e *Endpoint) {
					e.Locality = &Locality{Region: "region-1", Zone: "zone-a"}
					e.Node = "node-a"
				}),
				with(served("10.0.0.2", 8080, "web-2", v1), func(e *Endpoint) {
					e.Locality = &Locality{Region: "region-1", Zone: "hinted"}
					e.Node = "node-b"
				}),
				with(served("10.0.0.3", 8080, "web-3", v1), func(e *Endpoint) {
					e.Locality = &Locality{Zone: "hinted"}
					e.Node = "node-unknown"
				}),
				with(served("10.0.0.4", 8080, "web-4", v1), func(e *Endpoint) {
					e.Locality = &Locality{Region: "region-2", Zone: "zone-c", Subzone: "rack-7"}
					e.Node = "node-c"
				}),
			}},
		},
		{
			name:      "network: the pod's label over the system namespace's",
			nsNetwork: "net-ns",
			objs: []any{
				slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", ""), podEndpoint("10.0.0.2", "web-2", "")),
				pod("web-1", "", onNet), pod("web-2", "", v1),
			},
			want: map[int32][]Endpoint{80: {
				with(served("10.0.0.1", 8080, "web-1", onNet), func(e *Endpoint) { e.Network = "net-pod" }),
				with(served("10.0.0.2", 8080, "web-2", v1), func(e *Endpoint) { e.Network = "net-ns" }),
			}},
		},
		{
			name: "network: the pod's label without a system namespace label",
			objs: []any{
				slice("web-x", "web", podEndpoint("10.0.0.1", "web-1", ""), podEndpoint("10.0.0.2", "web-2", "")),
				pod("web-1", "", onNet), pod("web-2", "", v1),
			},
			want: map[int32][]Endpoint{80: {
				with(served("10.0.0.1", 8080, "web-1", onNet), func(e *Endpoint) { e.Network = "net-pod" }),
				served("10.0.0.2", 8080, "web-2", v1),
			}},
		},
		{
			name: "slices of other services are not read",
			objs: []any{
				slice("other-x", "other", podEndpoint("10.0.0.1", "web-1", "")),
				pod("web-1", "", v1),
			},
			want: map[int32][]Endpoint{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := tt.svc
			if svc == nil {
				svc = service("web", httpPort)
			}
			shard := translateStores(t, svc, tt.nsNetwork, tt.objs...)
			if shard == nil {
				t.Fatal("no shard")
			}
			if !reflect.DeepEqual(shard.Endpoints, tt.want) {
				t.Errorf("endpoints\n got %+v\nwant %+v", shard.Endpoints, tt.want)
			}
		})
	}
}

func TestTranslateService(t *testing.T) {
	named := func(name string, port int32, target string) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString(target)}
	}
	// sliceOn is an EndpointSlice of "web" serving port name at number with pods
	// web-<i> at ips.
	sliceOn := func(sliceName, name string, number int32, ips ...string) *discoveryv1.EndpointSlice {
		var eps []discoveryv1.Endpoint
		for _, ip := range ips {
			eps = append(eps, podEndpoint(ip, "web-"+ip, ""))
		}
		s := slice(sliceName, "web", eps...)
		s.Ports = []discoveryv1.EndpointPort{{Name: ptr.To(name), Port: ptr.To(number), Protocol: ptr.To(corev1.ProtocolTCP)}}
		return s
	}
	pods := func(ips ...string) []any {
		var out []any
		for _, ip := range ips {
			out = append(out, pod("web-"+ip, "", map[string]string{"istio": "ingressgateway"}))
		}
		return out
	}
	base := func(ports ...ServicePort) *Service {
		return &Service{Host: testHost, Name: "web", Namespace: testNS, Cluster: "c1", Ports: ports}
	}

	tests := []struct {
		name string
		svc  func(*corev1.Service)
		objs []any
		want *Service // nil: no shard
	}{
		{
			name: "ports, labels, selector, annotations and where it is reachable from outside",
			svc: func(s *corev1.Service) {
				s.Labels = map[string]string{network.LabelNetwork: "net-1"}
				s.Annotations = map[string]string{"networking.istio.io/gatewayPort": "15443"}
				s.Spec.Selector = map[string]string{"istio": "ingressgateway"}
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "tls", Port: 15443, Protocol: corev1.ProtocolTCP})
				s.Spec.ExternalIPs = []string{"192.0.2.1"}
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.1"}, {Hostname: "lb.example.com"}, {}}
			},
			want: &Service{
				Host: testHost, Name: "web", Namespace: testNS, Cluster: "c1",
				Labels:      map[string]string{network.LabelNetwork: "net-1"},
				Selector:    map[string]string{"istio": "ingressgateway"},
				Annotations: map[string]string{"networking.istio.io/gatewayPort": "15443"},
				Ports: []ServicePort{
					{Name: "http", Port: 80, Protocol: "TCP", TargetPort: 8080},
					{Name: "tls", Port: 15443, Protocol: "TCP", TargetPort: 15443}, // unset: the port
				},
				ExternalIPs:  []string{"192.0.2.1"},
				LoadBalancer: []string{"198.51.100.1", "lb.example.com"},
			},
		},
		{
			name: "a named target port is the number its endpoints are served at",
			svc: func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{named("https", 443, "https")}
			},
			objs: append([]any{sliceOn("web-x", "https", 8443, "10.0.0.1", "10.0.0.2")}, pods("10.0.0.1", "10.0.0.2")...),
			want: base(ServicePort{Name: "https", Port: 443, Protocol: "TCP", TargetPort: 8443, TargetPortName: "https"}),
		},
		{
			name: "a named target port that pods resolve differently: the most common number",
			svc: func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{named("https", 443, "https")}
			},
			objs: append([]any{
				sliceOn("web-old", "https", 443, "10.0.0.1"),
				sliceOn("web-new", "https", 8443, "10.0.0.2", "10.0.0.3"),
			}, pods("10.0.0.1", "10.0.0.2", "10.0.0.3")...),
			want: base(ServicePort{Name: "https", Port: 443, Protocol: "TCP", TargetPort: 8443, TargetPortName: "https"}),
		},
		{
			name: "a tie between numbers: the lowest",
			svc: func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{named("https", 443, "https")}
			},
			objs: append([]any{
				sliceOn("web-a", "https", 9443, "10.0.0.1"),
				sliceOn("web-b", "https", 8443, "10.0.0.2"),
			}, pods("10.0.0.1", "10.0.0.2")...),
			want: base(ServicePort{Name: "https", Port: 443, Protocol: "TCP", TargetPort: 8443, TargetPortName: "https"}),
		},
		{
			name: "a named target port without endpoints is not resolved",
			svc: func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{named("https", 443, "https"), named("status", 15021, "status-port")}
			},
			// Only https has endpoints; a not-ready one still tells the number.
			objs: []any{
				func() *discoveryv1.EndpointSlice {
					s := sliceOn("web-x", "https", 8443, "10.0.0.1")
					s.Endpoints[0].Conditions.Ready = ptr.To(false)
					return s
				}(),
				pods("10.0.0.1")[0],
			},
			want: base(
				ServicePort{Name: "https", Port: 443, Protocol: "TCP", TargetPort: 8443, TargetPortName: "https"},
				ServicePort{Name: "status", Port: 15021, Protocol: "TCP", TargetPortName: "status-port"},
			),
		},
		{
			name: "spec.trafficDistribution wins over the annotation",
			svc: func(s *corev1.Service) {
				s.Annotations = map[string]string{network.AnnotationTrafficDistribution: "PreferSameNode"}
				s.Spec.TrafficDistribution = ptr.To("PreferClose")
			},
			want: func() *Service {
				s := base(ServicePort{Name: "http", Port: 80, Protocol: "TCP", TargetPort: 8080})
				s.Annotations = map[string]string{network.AnnotationTrafficDistribution: "PreferSameNode"}
				s.TrafficDistribution = network.DistributionPreferSameZone
				return s
			}(),
		},
		{
			name: "an unrecognized spec.trafficDistribution: the annotation, and it is reported",
			svc: func(s *corev1.Service) {
				s.Annotations = map[string]string{network.AnnotationTrafficDistribution: "PreferSameNode"}
				s.Spec.TrafficDistribution = ptr.To("Nearby")
			},
			want: func() *Service {
				s := base(ServicePort{Name: "http", Port: 80, Protocol: "TCP", TargetPort: 8080})
				s.Annotations = map[string]string{network.AnnotationTrafficDistribution: "PreferSameNode"}
				s.TrafficDistribution = network.DistributionPreferSameNode
				s.InvalidTrafficDistribution = `spec.trafficDistribution "Nearby"`
				return s
			}(),
		},
		{
			name: "an ExternalName service has no shard",
			svc: func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeExternalName
				s.Spec.ExternalName = "web.example.com"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := service("web")
			tt.svc(svc)
			got := translateStores(t, svc, "", tt.objs...)
			if tt.want == nil {
				if got != nil {
					t.Errorf("shard %+v, want none", got)
				}
				return
			}
			if got == nil {
				t.Fatal("no shard")
			}
			if !reflect.DeepEqual(&got.Service, tt.want) {
				t.Errorf("service\n got %+v\nwant %+v", got.Service, *tt.want)
			}
		})
	}
}

func TestTrafficDistributionPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name             string
		spec, annotation string
		namespace        string
		want             network.TrafficDistribution
		wantInvalid      string
	}{
		{name: "none"},
		{name: "the namespace's annotation", namespace: "PreferSameNode", want: network.DistributionPreferSameNode},
		{name: "the Service's annotation over the namespace's", annotation: "PreferClose", namespace: "PreferSameNode", want: network.DistributionPreferSameZone},
		{name: "the field over both", spec: "PreferSameNode", annotation: "PreferClose", namespace: "PreferClose", want: network.DistributionPreferSameNode},
		{name: "PreferClose is PreferSameZone", spec: "PreferClose", want: network.DistributionPreferSameZone},
		{name: "an unrecognized annotation: the namespace's applies, reported", annotation: "Closest", namespace: "PreferSameZone",
			want: network.DistributionPreferSameZone, wantInvalid: `Service annotation networking.istio.io/traffic-distribution "Closest"`},
		{name: "nothing recognized: unset, the first reported", spec: "Near", namespace: "Far",
			wantInvalid: `spec.trafficDistribution "Near"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := service("web")
			if tc.spec != "" {
				svc.Spec.TrafficDistribution = ptr.To(tc.spec)
			}
			if tc.annotation != "" {
				svc.Annotations = map[string]string{network.AnnotationTrafficDistribution: tc.annotation}
			}
			got, invalid := trafficDistribution(svc, tc.namespace)
			if got != tc.want || invalid != tc.wantInvalid {
				t.Errorf("trafficDistribution = %q, %q; want %q, %q", got, invalid, tc.want, tc.wantInvalid)
			}
		})
	}
}
