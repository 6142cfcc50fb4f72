package clusterregistry_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

const (
	benchNamespaces = 10
	benchServices   = 1000 // over all namespaces
	benchPods       = 10   // per service
)

var populateOnce sync.Once

var heapProfile = flag.String("heapprofile", "", "BenchmarkRegistrySync10kPods writes a heap profile to this file while the synced registry is live (-memprofile is written after it is closed)")

// populate writes 1,000 services with 10 ready pods each (10,000 pods, with IPs and
// Ready conditions set through the status subresource) and one EndpointSlice per
// service into the shared cluster, using many writers at once.
func populate(b *testing.B) {
	populateOnce.Do(func() {
		start := time.Now()
		ctx := context.Background()
		cfg := *cluster.Config
		cfg.QPS = -1
		cs := kubernetes.NewForConfigOrDie(&cfg)
		for i := range benchNamespaces {
			if err := kubetest.EnsureNamespace(ctx, cs, fmt.Sprintf("bench-%d", i), nil); err != nil {
				b.Fatal(err)
			}
		}
		if err := kubetest.CreateNode(ctx, cs, "bench-node", "region-1", "zone-a", ""); err != nil {
			b.Fatal(err)
		}
		work := make(chan int)
		errs := make(chan error, benchServices)
		var wg sync.WaitGroup
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					if err := writeBenchService(ctx, cs, i); err != nil {
						errs <- err
					}
				}
			}()
		}
		for i := range benchServices {
			work <- i
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		b.Logf("wrote %d services, %d pods in %s", benchServices, benchServices*benchPods, time.Since(start).Round(time.Second))
	})
}

func writeBenchService(ctx context.Context, cs kubernetes.Interface, i int) error {
	ns, name := fmt.Sprintf("bench-%d", i%benchNamespaces), fmt.Sprintf("svc-%d", i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for p := range benchPods {
		ip := fmt.Sprintf("10.%d.%d.%d", 100+i/250, i%250, p+1)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, p), Namespace: ns, Labels: map[string]string{
				"app": name, "version": "v1", network.LabelTLSMode: network.TLSModeIstio,
			}},
			Spec: corev1.PodSpec{NodeName: "bench-node", Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:bench"}}},
		}
		created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if err := kubetest.SetPodStatus(ctx, cs, created, ip, true); err != nil {
			return err
		}
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			NodeName:   ptr.To("bench-node"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod.Name},
		})
	}
	_, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{})
	return err
}

// BenchmarkRegistrySync10kPods measures how long one cluster with 1,000 services and
// 10,000 pods takes to sync (client start to every shard built) and how much heap the
// registry holds for it afterwards.
func BenchmarkRegistrySync10kPods(b *testing.B) {
	populate(b)
	var totalSync time.Duration
	var heap uint64
	for i := 0; b.Loop(); i++ {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r, err := clusterregistry.New(clusterregistry.Options{
			DomainSuffix: "cluster.local", Namespace: "istio-system",
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		changed := make(chan struct{}, 1)
		r.OnStatusChange(func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
		start := time.Now()
		id := network.ClusterID(fmt.Sprintf("bench-%d", i))
		r.SetCluster(id, "bench", cluster.Config)
		for !r.HasSynced() {
			<-changed
		}
		totalSync += time.Since(start)
		st := r.Clusters()[0]
		if st.Services < benchServices || st.Endpoints != benchServices*benchPods {
			b.Fatalf("synced %d services, %d endpoints", st.Services, st.Endpoints)
		}
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += after.HeapAlloc - before.HeapAlloc
		if *heapProfile != "" {
			writeHeapProfile(b, *heapProfile)
		}
		r.Close()
	}
	n := uint64(b.N)
	b.ReportMetric(float64(totalSync.Milliseconds())/float64(b.N), "sync-ms")
	b.ReportMetric(float64(heap/n)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(heap/n)/float64(benchServices*benchPods), "heap-B/pod")
}

// writeHeapProfile writes the heap profile as of the last garbage collection to path.
func writeHeapProfile(b *testing.B, path string) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// countingTransport counts the requests made and the response bytes read through it.
type countingTransport struct {
	next           http.RoundTripper
	requests, read *atomic.Int64
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.requests.Add(1)
	resp, err := t.next.RoundTrip(req)
	if resp != nil && resp.Body != nil {
		resp.Body = countingBody{resp.Body, t.read}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	read *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read.Add(int64(n))
	return n, err
}

// BenchmarkRegistrySyncScoped syncs the cluster of BenchmarkRegistrySync10kPods (1,000
// services in 10 namespaces, 10,000 pods) with every namespace watched and with
// discovery selectors that select one namespace of the ten, and reports the sync
// time, the heap held and the bytes read from the API server.
func BenchmarkRegistrySyncScoped(b *testing.B) {
	populate(b)
	for _, bc := range []struct {
		name      string
		selectors string
		services  int
	}{
		{"all", "", benchServices}, // and the API server's own Service
		{"one-of-10-namespaces", "[{matchLabels: {kubernetes.io/metadata.name: bench-0}}]", benchServices / benchNamespaces},
	} {
		b.Run(bc.name, func(b *testing.B) {
			sel, err := network.ParseDiscoverySelectors(bc.selectors)
			if err != nil {
				b.Fatal(err)
			}
			var totalSync time.Duration
			var heap uint64
			var requests, read atomic.Int64
			for i := 0; b.Loop(); i++ {
				var before runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				r, err := clusterregistry.New(clusterregistry.Options{
					DomainSuffix: "cluster.local", Namespace: "istio-system",
					Logger: slog.New(slog.DiscardHandler),
				})
				if err != nil {
					b.Fatal(err)
				}
				r.SetDiscoverySelectors(sel)
				changed := make(chan struct{}, 1)
				r.OnStatusChange(func() {
					select {
					case changed <- struct{}{}:
					default:
					}
				})
				cfg := rest.CopyConfig(cluster.Config)
				cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
					return countingTransport{next: rt, requests: &requests, read: &read}
				}
				start := time.Now()
				id := network.ClusterID(fmt.Sprintf("bench-%d", i))
				r.SetCluster(id, "bench", cfg)
				for !r.HasSynced() {
					<-changed
				}
				totalSync += time.Since(start)
				st := r.Clusters()[0]
				if st.Services < bc.services || st.Endpoints != bc.services*benchPods {
					b.Fatalf("synced %d services, %d endpoints; want %d services (the API server's own one aside)", st.Services, st.Endpoints, bc.services)
				}
				var after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap += after.HeapAlloc - before.HeapAlloc
				r.Close()
			}
			n := float64(b.N)
			b.ReportMetric(float64(totalSync.Milliseconds())/n, "sync-ms")
			b.ReportMetric(float64(heap)/n/(1<<20), "heap-MiB")
			b.ReportMetric(float64(read.Load())/n/(1<<10), "read-KiB")
			b.ReportMetric(float64(requests.Load())/n, "requests")
		})
	}
}
