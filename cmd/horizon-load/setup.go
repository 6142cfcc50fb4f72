package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/horizon-mesh/horizon/cmd/localmesh"
	"github.com/horizon-mesh/horizon/eds"
	"github.com/horizon-mesh/horizon/network"
)

const (
	namespace       = "load"
	systemNamespace = "istio-system"
	servicePort     = 80
	targetPort      = 8080
	gatewayPort     = 15443
	domain          = "cluster.local"
)

// Cluster c (0-based) is cluster<c+1> on network<c+1>, whose one gateway is
// 192.0.2.<c+1>:15443. Cluster 0 (cluster1) is the config cluster; the others are
// remote clusters, each with its remote Secret.
func clusterName(c int) string { return fmt.Sprintf("cluster%d", c+1) }
func networkName(c int) string { return fmt.Sprintf("network%d", c+1) }
func gatewayAddr(c int) string { return fmt.Sprintf("192.0.2.%d", c+1) }

// changedCluster is the remote cluster whose EndpointSlices the changes and the churn
// edit: cluster2. Its services have a spare ready pod outside their EndpointSlice.
const changedCluster = 1

// meshNetworks puts each of n clusters on its own network, each with one gateway.
func meshNetworks(n int) string {
	var b strings.Builder
	b.WriteString("networks:\n")
	for c := range n {
		fmt.Fprintf(&b, "  %s:\n    endpoints:\n    - fromRegistry: %s\n    gateways:\n    - address: %s\n      port: %d\n",
			networkName(c), clusterName(c), gatewayAddr(c), gatewayPort)
	}
	return b.String()
}

func serviceName(j int) string { return fmt.Sprintf("svc-%d", j) }

func hostName(j int) string {
	return fmt.Sprintf("%s.%s.svc.%s", serviceName(j), namespace, domain)
}

// claName is the EDS resource name a sidecar subscribes to for service j.
func claName(j int) string { return eds.ClusterName(hostName(j), servicePort) }

// podIP is the address of endpoint e (0-based; e == Endpoints is the spare) of
// service j in cluster c (0-based).
func podIP(c, j, e int) string {
	return fmt.Sprintf("%d.%d.%d.%d", 10+(c+1)/8, 32*((c+1)%8)+j/256, j%256, e+1)
}

func podName(j, e int) string { return fmt.Sprintf("%s-%d", serviceName(j), e) }

// writeCluster creates the namespace, a node, and every service with its ready pods
// and one EndpointSlice, using cfg.Writers writers. In cluster2 each service also
// gets a spare ready pod outside the EndpointSlice, which changes add and remove.
// It returns the EndpointSlices as created. cs should speak protobuf (writeClient):
// setup time is mostly the API servers' CPU, and they decode and encode protobuf
// faster than JSON.
func writeCluster(ctx context.Context, cs kubernetes.Interface, c int, cfg config) ([]*discoveryv1.EndpointSlice, error) {
	if err := localmesh.EnsureNamespace(ctx, cs, namespace, nil); err != nil {
		return nil, fmt.Errorf("create namespace %s in %s: %w", namespace, clusterName(c), err)
	}
	node := "load-node"
	if err := localmesh.CreateNode(ctx, cs, node, "region-"+networkName(c), "zone-a", ""); err != nil {
		return nil, fmt.Errorf("in %s: %w", clusterName(c), err)
	}
	slices := make([]*discoveryv1.EndpointSlice, cfg.Services)
	work := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range min(cfg.Writers, cfg.Services) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				s, err := writeService(ctx, cs, c, j, node, cfg.Endpoints, c == changedCluster)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				slices[j] = s
				mu.Unlock()
			}
		}()
	}
feed:
	for j := range cfg.Services {
		select {
		case work <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return slices, ctx.Err()
}

func writeService(ctx context.Context, cs kubernetes.Interface, c, j int, node string, endpoints int, spare bool) (*discoveryv1.EndpointSlice, error) {
	name := serviceName(j)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: servicePort, TargetPort: intstr.FromInt32(targetPort)}},
		},
	}
	if _, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create service %s in %s: %w", name, clusterName(c), err)
	}
	n := endpoints
	if spare {
		n++
	}
	for e := range n {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: podName(j, e), Namespace: namespace, Labels: map[string]string{
				"app": name, "version": "v1", network.LabelTLSMode: network.TLSModeIstio,
			}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:load"}}},
		}
		created, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create pod %s in %s: %w", pod.Name, clusterName(c), err)
		}
		if err := localmesh.SetPodStatus(ctx, cs, created, podIP(c, j, e), true); err != nil {
			return nil, fmt.Errorf("in %s: %w", clusterName(c), err)
		}
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](targetPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   sliceEndpoints(c, j, node, endpoints),
	}
	created, err := cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create endpointslice %s in %s: %w", name, clusterName(c), err)
	}
	return created, nil
}

// sliceEndpoints lists the first n endpoints of service j in cluster c.
func sliceEndpoints(c, j int, node string, n int) []discoveryv1.Endpoint {
	out := make([]discoveryv1.Endpoint, 0, n)
	for e := range n {
		out = append(out, discoveryv1.Endpoint{
			Addresses:  []string{podIP(c, j, e)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			NodeName:   ptr.To(node),
			Zone:       ptr.To("zone-a"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: namespace, Name: podName(j, e)},
		})
	}
	return out
}

// writeClient is a clientset for cfg's cluster that sends and accepts protobuf.
func writeClient(cfg *rest.Config) (kubernetes.Interface, error) {
	pc := rest.CopyConfig(cfg)
	pc.ContentType = runtime.ContentTypeProtobuf
	pc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return kubernetes.NewForConfig(pc)
}

// writeMeshConfig writes the meshNetworks ConfigMap and every remote cluster's remote
// Secret into cluster1's system namespace.
func writeMeshConfig(ctx context.Context, clusters []*localmesh.Cluster) error {
	c1 := clusters[0]
	if err := localmesh.EnsureNamespace(ctx, c1.Client, systemNamespace, nil); err != nil {
		return fmt.Errorf("create namespace %s in cluster1: %w", systemNamespace, err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: systemNamespace},
		Data:       map[string]string{"meshNetworks": meshNetworks(len(clusters))},
	}
	if _, err := c1.Client.CoreV1().ConfigMaps(systemNamespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ConfigMap %s/istio: %w", systemNamespace, err)
	}
	for c := 1; c < len(clusters); c++ {
		name := clusterName(c)
		kc, _, err := clusters[c].MintKubeconfig(ctx, systemNamespace, "horizon-load-reader")
		if err != nil {
			return err
		}
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: "istio-remote-secret-" + name, Namespace: systemNamespace,
				Labels:      map[string]string{network.LabelMultiCluster: "true"},
				Annotations: map[string]string{"networking.istio.io/cluster": name},
			},
			Data: map[string][]byte{name: kc},
		}
		if _, err := c1.Client.CoreV1().Secrets(systemNamespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create remote Secret for %s: %w", name, err)
		}
	}
	return nil
}

// remoteSlices edits cluster2's EndpointSlices by adding and removing each service's
// spare endpoint. Only one goroutine uses it.
type remoteSlices struct {
	cs     kubernetes.Interface
	slices []*discoveryv1.EndpointSlice
	spare  []bool // whether service j's spare endpoint is in its slice
	n      int    // regular endpoints per service
}

// toggle adds service j's spare endpoint if it is out, else removes it, and returns
// the new endpoint count, the write's latency and when the write started. The caller
// must publish the expected state before the write starts: onWrite runs just before.
func (r *remoteSlices) toggle(ctx context.Context, j int, onWrite func(count int)) (count int, started time.Time, took time.Duration, err error) {
	add := !r.spare[j]
	count = r.n
	if add {
		count++
	}
	for attempt := 0; ; attempt++ {
		s := r.slices[j].DeepCopy()
		s.Endpoints = sliceEndpoints(changedCluster, j, "load-node", count)
		onWrite(count)
		started = time.Now()
		updated, err := r.cs.DiscoveryV1().EndpointSlices(namespace).Update(ctx, s, metav1.UpdateOptions{})
		took = time.Since(started)
		if err == nil {
			r.slices[j], r.spare[j] = updated, add
			return count, started, took, nil
		}
		if !apierrors.IsConflict(err) || attempt >= 3 {
			return 0, started, took, fmt.Errorf("update endpointslice %s in cluster2: %w", s.Name, err)
		}
		cur, gerr := r.cs.DiscoveryV1().EndpointSlices(namespace).Get(ctx, s.Name, metav1.GetOptions{})
		if gerr != nil {
			return 0, started, took, fmt.Errorf("read endpointslice %s in cluster2: %w", s.Name, gerr)
		}
		r.slices[j] = cur
	}
}
