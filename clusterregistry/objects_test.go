package clusterregistry

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/horizon-mesh/horizon/network"
)

// Objects for tests that fill informer stores by hand. Namespace "sample" unless the
// test edits them.

const testNS = "sample"

func service(name string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, ResourceVersion: "1"},
		Spec:       corev1.ServiceSpec{Ports: ports},
	}
}

// slice returns an EndpointSlice of service svc with one port "http" → 8080/TCP.
func slice(name, svc string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: testNS, ResourceVersion: "1",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

// podEndpoint is a ready slice endpoint at ip backed by pod; node may be empty.
func podEndpoint(ip, pod, node string) discoveryv1.Endpoint {
	ep := discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: testNS, Name: pod},
	}
	if node != "" {
		ep.NodeName = ptr.To(node)
	}
	return ep
}

// pod returns a ready pod on node (which may be empty).
func pod(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, ResourceVersion: "1", Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: "sa"},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue},
		}},
	}
}

// node returns a node in region and zone.
func node(name, region, zone string) *corev1.Node {
	labels := map[string]string{}
	if region != "" {
		labels[corev1.LabelTopologyRegion] = region
	}
	if zone != "" {
		labels[corev1.LabelTopologyZone] = zone
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "1", Labels: labels}}
}

// systemNamespace returns the system namespace labelled with network n (none if empty).
func systemNamespace(n network.NetworkID) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system", ResourceVersion: "1"}}
	if n != "" {
		ns.Labels = map[string]string{network.LabelNetwork: string(n)}
	}
	return ns
}

func key(service string) types.NamespacedName {
	return types.NamespacedName{Namespace: testNS, Name: service}
}
