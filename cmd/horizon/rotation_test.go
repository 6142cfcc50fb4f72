package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// soakRotations is how many times TestRotationSoak rotates the remote Secret.
const soakRotations = 200

// TestRotationSoak rotates a remote Secret soakRotations times — each time a fresh
// bound token from the remote API server, each rotation hot-swapped before the next —
// while a state-of-the-world proxy watches the remote service's endpoints and a
// client fetches /debug/endpointz in a loop. Every assignment the proxy receives and
// every fetch must hold the remote endpoint, no fetch may fail, and the process's
// goroutines and heap must come back to where they were after a warm-up.
func TestRotationSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test")
	}
	ctx := t.Context()
	const (
		ns   = "rotation-soak"
		id   = "soak"
		ip   = "10.2.88.1"
		host = "web." + ns + ".svc.cluster.local"
		cla  = "outbound|80||" + host
	)
	err := kubetest.Deploy(ctx, cluster2.Client, kubetest.Service{
		Namespace: ns, Name: "web",
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		Backends: []kubetest.Backend{{Pod: "web-0", IP: ip, Ready: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := kubetest.EnsureNamespace(ctx, cluster1.Client, "istio-system", nil); err != nil {
		t.Fatal(err)
	}
	secretsAPI := cluster1.Client.CoreV1().Secrets("istio-system")
	mint := func() []byte {
		t.Helper()
		tok, err := cluster2.MintToken(ctx, "kube-system", "soak-reader", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		kc, err := cluster2.Kubeconfig(tok.Value)
		if err != nil {
			t.Fatal(err)
		}
		return kc
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "rotation-soak", Namespace: "istio-system",
			Labels: map[string]string{network.LabelMultiCluster: "true"},
			// Watch the soak's namespace only: each rotation lists less.
			Annotations: map[string]string{network.AnnotationDiscoverySelectors: `[{"matchLabels":{"kubernetes.io/metadata.name":"` + ns + `"}}]`}},
		Data: map[string][]byte{id: mint()},
	}
	if _, err := secretsAPI.Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = secretsAPI.Delete(context.Background(), secret.Name, metav1.DeleteOptions{}) })

	xdsAddr, httpAddr, _ := startServe(t, "--log-level", "info")
	base := "http://" + httpAddr

	// Every assignment of the soak's service the proxy receives must hold the endpoint.
	var received, withdrawn atomic.Int64
	var firstBad atomic.Value
	hasEndpoint := func(c *endpointv3.ClusterLoadAssignment) bool {
		for _, l := range c.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				if e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == ip {
					return true
				}
			}
		}
		return false
	}
	observe := func(typeURL string, m proto.Message) {
		c, ok := m.(*endpointv3.ClusterLoadAssignment)
		if typeURL != xdstest.TypeCLA || !ok || c.GetClusterName() != cla {
			return
		}
		received.Add(1)
		if !hasEndpoint(c) {
			withdrawn.Add(1)
			firstBad.CompareAndSwap(nil, strings.Join(xdstest.Summary(c), "; "))
		}
	}
	proxy := xdstest.Connect(t, xdsAddr, xdstest.Node("sidecar~10.1.0.88~sleep."+ns+"~"+ns+".svc.cluster.local", ""),
		xdstest.Options{CDS: true, EDS: []string{cla}, Observe: observe})
	kubetest.Eventually(t, 15*time.Second, func() error {
		if received.Load() == 0 || withdrawn.Load() > 0 {
			return fmt.Errorf("proxy has %q", xdstest.Summary(proxy.CLA(cla)))
		}
		return nil
	})

	// A client reads what Horizon serves for the host, in a loop, through the soak.
	var fetches, failed atomic.Int64
	var firstFail atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			fetches.Add(1)
			if err := endpointzHolds(base, host, id, ip); err != nil {
				failed.Add(1)
				firstFail.CompareAndSwap(nil, err.Error())
			}
			if c := proxy.CLA(cla); c == nil || !hasEndpoint(c) {
				failed.Add(1)
				firstFail.CompareAndSwap(nil, fmt.Sprintf("proxy holds %q", xdstest.Summary(c)))
			}
		}
	}()

	rotate := func(i int) {
		t.Helper()
		cur, err := secretsAPI.Get(ctx, secret.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Data = map[string][]byte{id: mint()}
		sent := time.Now()
		if _, err := secretsAPI.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Swapped: the active client started after the update, none pending.
		kubetest.Eventually(t, 30*time.Second, func() error {
			c, err := clusterStatus(base, id)
			if err != nil {
				return err
			}
			if c.Rotation != nil || !c.Started.After(sent) || c.Endpoints != 1 {
				return fmt.Errorf("rotation %d not swapped in: started %s, rotation %v, %d endpoints", i, c.Started, c.Rotation != nil, c.Endpoints)
			}
			return nil
		})
	}
	measure := func() (goroutines int, heap uint64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.HeapAlloc
	}

	const warmup = 10
	for i := range warmup {
		rotate(i)
	}
	g0, h0 := measure()
	began := time.Now()
	var mid []string
	for i := range soakRotations {
		rotate(warmup + i)
		if (i+1)%50 == 0 {
			g, h := measure()
			mid = append(mid, fmt.Sprintf("%d: %d goroutines, %.1f MiB", i+1, g, float64(h)/(1<<20)))
		}
	}
	t.Logf("after warm-up: %d goroutines, %.1f MiB; %s", g0, float64(h0)/(1<<20), strings.Join(mid, "; "))
	took := time.Since(began)
	close(stop)
	wg.Wait()

	// Old clients stop in the background: wait for the goroutines to come back. A
	// stopped client's connection state lingers for the HTTP/2 health-check period
	// (30s) before it can be collected: give the heap that long to come back.
	var g1 int
	var h1 uint64
	heapLimit := h0 + h0/5 + 2<<20
	deadline := time.Now().Add(60 * time.Second)
	for {
		g1, h1 = measure()
		if (g1 <= g0+10 && h1 <= heapLimit) || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	settled := time.Since(began) - took
	t.Logf("settled %s after the last rotation", settled.Round(time.Second))
	t.Logf("%d rotations in %s (%s each); proxy received %d assignments of %s, %d without the endpoint; %d fetches, %d failed; goroutines %d → %d; heap %.1f → %.1f MiB",
		soakRotations, took.Round(time.Millisecond), (took / soakRotations).Round(time.Millisecond), received.Load(), cla, withdrawn.Load(),
		fetches.Load(), failed.Load(), g0, g1, float64(h0)/(1<<20), float64(h1)/(1<<20))
	if n := withdrawn.Load(); n > 0 {
		t.Errorf("%d assignments the proxy received lacked the endpoint; first: %v", n, firstBad.Load())
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d fetches failed; first: %v", n, fetches.Load(), firstFail.Load())
	}
	if fetches.Load() < soakRotations {
		t.Errorf("only %d fetches over %d rotations", fetches.Load(), soakRotations)
	}
	if g1 > g0+10 {
		t.Errorf("goroutines %d after %d rotations, %d before", g1, soakRotations, g0)
	}
	// A leak of one cluster's clients, caches or transport per rotation would add
	// tens of kilobytes each.
	if h1 > heapLimit {
		t.Errorf("heap %d bytes after %d rotations, %d before (limit %d)", h1, soakRotations, h0, heapLimit)
	}
}

// clusterStatus reads cluster id from /debug/clusterz.
func clusterStatus(base string, id network.ClusterID) (clusterregistry.ClusterStatus, error) {
	var cz app.ClusterzResponse
	if err := getJSONPlain(base+"/debug/clusterz", &cz); err != nil {
		return clusterregistry.ClusterStatus{}, err
	}
	i := slices.IndexFunc(cz.Clusters, func(c clusterregistry.ClusterStatus) bool { return c.ID == id })
	if i < 0 {
		return clusterregistry.ClusterStatus{}, fmt.Errorf("no cluster %s", id)
	}
	return cz.Clusters[i], nil
}

// endpointzHolds checks that /debug/endpointz lists ip for host in cluster id.
func endpointzHolds(base, host string, id network.ClusterID, ip string) error {
	var ez app.EndpointzResponse
	if err := getJSONPlain(base+"/debug/endpointz?host="+host, &ez); err != nil {
		return err
	}
	for _, eps := range ez.Clusters[id].Endpoints {
		for _, ep := range eps {
			if ep.Address == ip {
				return nil
			}
		}
	}
	return fmt.Errorf("/debug/endpointz: cluster %s has no endpoint %s for %s", id, ip, host)
}

func getJSONPlain(url string, into any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}
