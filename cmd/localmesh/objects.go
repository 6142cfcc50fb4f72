package localmesh

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// Backend is one pod behind a service, as a kubelet and the EndpointSlice controller
// would report it.
type Backend struct {
	Pod    string
	IP     string
	Node   string // empty: not scheduled on a node
	Ready  bool
	Labels map[string]string
	// ServiceAccount defaults to "default".
	ServiceAccount string
	// Zone is the EndpointSlice zone hint.
	Zone string
}

// Service describes a service and its backends for Deploy and DeployPods.
type Service struct {
	Namespace string
	Name      string
	Labels    map[string]string
	// Annotations are set on the Service (others it has are kept).
	Annotations map[string]string
	// TrafficDistribution, if not nil, sets the Service's spec.trafficDistribution
	// ("" clears it); nil leaves it as it is.
	TrafficDistribution *string
	// Ports of the service; each targets TargetPort with the same name.
	Ports []corev1.ServicePort
	// Backends become pods (with IP and readiness set through the status subresource)
	// and one EndpointSlice listing them.
	Backends []Backend
}

// Deploy creates or updates the namespace, service, pods and EndpointSlice described
// by s. Pods no longer listed are not deleted; they leave the EndpointSlice.
func Deploy(ctx context.Context, cs kubernetes.Interface, s Service) error {
	if err := ensureService(ctx, cs, s); err != nil {
		return err
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      s.Name + "-test",
			Namespace: s.Namespace,
			Labels:    map[string]string{discoveryv1.LabelServiceName: s.Name},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range s.Ports {
		name, proto, port := p.Name, p.Protocol, p.TargetPort.IntVal
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if p.TargetPort.Type != intstr.Int || port == 0 {
			port = p.Port
		}
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: &name, Protocol: &proto, Port: &port})
	}
	for _, b := range s.Backends {
		if err := ensurePod(ctx, cs, s, b); err != nil {
			return err
		}
		ready := b.Ready
		ep := discoveryv1.Endpoint{
			Addresses:  []string{b.IP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: s.Namespace, Name: b.Pod},
		}
		if b.Node != "" {
			ep.NodeName = &b.Node
		}
		if b.Zone != "" {
			ep.Zone = &b.Zone
		}
		slice.Endpoints = append(slice.Endpoints, ep)
	}
	slices := cs.DiscoveryV1().EndpointSlices(s.Namespace)
	if cur, err := slices.Get(ctx, slice.Name, metav1.GetOptions{}); err == nil {
		slice.ResourceVersion = cur.ResourceVersion
		_, err = slices.Update(ctx, slice, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("update endpointslice %s/%s: %w", s.Namespace, slice.Name, err)
		}
		return nil
	}
	if _, err := slices.Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create endpointslice %s/%s: %w", s.Namespace, slice.Name, err)
	}
	return nil
}

// DeployPods creates or updates the namespace, service and pods described by s, and
// sets each pod's IP and readiness as a kubelet would; it writes no EndpointSlice.
// It is for clusters that run the EndpointSlice controller
// (ClusterOptions.ControllerManager), which makes the slices from the Service's
// selector (app=<name>) and the pods, with their node names, readiness and target
// references; a Backend's Zone is not used, since the controller takes the zone from
// the pod's node. A pod's node is registered (without labels) if missing, as its
// kubelet would; the controller leaves out pods with no node, as in a real cluster.
// Pods of the service no longer listed are deleted, as scaling a Deployment down
// would.
func DeployPods(ctx context.Context, cs kubernetes.Interface, s Service) error {
	if err := ensureService(ctx, cs, s); err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, b := range s.Backends {
		keep[b.Pod] = true
		if b.Node != "" {
			_, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: b.Node}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("register node %s: %w", b.Node, err)
			}
		}
		if err := ensurePod(ctx, cs, s, b); err != nil {
			return err
		}
	}
	pods, err := cs.CoreV1().Pods(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + s.Name})
	if err != nil {
		return fmt.Errorf("list pods of %s/%s: %w", s.Namespace, s.Name, err)
	}
	zero := int64(0)
	for _, p := range pods.Items {
		if keep[p.Name] {
			continue
		}
		err := cs.CoreV1().Pods(s.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s/%s: %w", s.Namespace, p.Name, err)
		}
	}
	return nil
}

// ensureService creates or updates the namespace and the Service of s, selecting
// app=<name>.
func ensureService(ctx context.Context, cs kubernetes.Interface, s Service) error {
	if err := EnsureNamespace(ctx, cs, s.Namespace, nil); err != nil {
		return err
	}
	var dist *string
	if s.TrafficDistribution != nil && *s.TrafficDistribution != "" {
		dist = s.TrafficDistribution
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: s.Labels, Annotations: s.Annotations},
		Spec:       corev1.ServiceSpec{Ports: s.Ports, Selector: map[string]string{"app": s.Name}, TrafficDistribution: dist},
	}
	if cur, err := cs.CoreV1().Services(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{}); err == nil {
		cur.Labels, cur.Spec.Ports = s.Labels, s.Ports
		for k, v := range s.Annotations {
			if cur.Annotations == nil {
				cur.Annotations = map[string]string{}
			}
			cur.Annotations[k] = v
		}
		if s.TrafficDistribution != nil {
			cur.Spec.TrafficDistribution = dist
		}
		if _, err := cs.CoreV1().Services(s.Namespace).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update service %s/%s: %w", s.Namespace, s.Name, err)
		}
	} else if _, err := cs.CoreV1().Services(s.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

func ensurePod(ctx context.Context, cs kubernetes.Interface, s Service, b Backend) error {
	pods := cs.CoreV1().Pods(s.Namespace)
	labels := map[string]string{"app": s.Name}
	for k, v := range b.Labels {
		labels[k] = v
	}
	sa := b.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	pod, err := pods.Get(ctx, b.Pod, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		pod, err = pods.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: b.Pod, Namespace: s.Namespace, Labels: labels},
			Spec: corev1.PodSpec{
				NodeName:           b.Node,
				ServiceAccountName: sa,
				Containers:         []corev1.Container{{Name: "app", Image: "registry.invalid/app:test"}},
			},
		}, metav1.CreateOptions{})
	} else if err == nil {
		pod.Labels = labels
		pod, err = pods.Update(ctx, pod, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("write pod %s/%s: %w", s.Namespace, b.Pod, err)
	}
	return SetPodStatus(ctx, cs, pod, b.IP, b.Ready)
}

// SetPodStatus sets the pod's IP, phase and Ready condition through the status
// subresource, as a kubelet would.
func SetPodStatus(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, ip string, ready bool) error {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		PodIP:      ip,
		PodIPs:     []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}},
	}
	if _, err := cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// EnsureNamespace creates namespace name if missing and sets the given labels on it.
func EnsureNamespace(ctx context.Context, cs kubernetes.Interface, name string, labels map[string]string) error {
	ns, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return EnsureNamespace(ctx, cs, name, labels)
		}
		return err
	}
	if err != nil || len(labels) == 0 {
		return err
	}
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	for k, v := range labels {
		ns.Labels[k] = v
	}
	_, err = cs.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
	return err
}

// CreateNode creates (or relabels) a node with the standard region and zone labels and the Istio
// subzone label (any may be empty).
func CreateNode(ctx context.Context, cs kubernetes.Interface, name, region, zone, subzone string) error {
	labels := map[string]string{}
	for k, v := range map[string]string{
		corev1.LabelTopologyRegion:  region,
		corev1.LabelTopologyZone:    zone,
		"topology.istio.io/subzone": subzone,
	} {
		if v != "" {
			labels[k] = v
		}
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	_, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var cur *corev1.Node
		if cur, err = cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err == nil {
			cur.Labels = labels
			_, err = cs.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	return nil
}
