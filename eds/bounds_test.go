package eds

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

func (f *xdsFixture) groupCount() int {
	f.s.pushMu.Lock()
	defer f.s.pushMu.Unlock()
	return len(f.s.groups)
}

func (f *xdsFixture) edsClient() endpointservice.EndpointDiscoveryServiceClient {
	f.t.Helper()
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	return endpointservice.NewEndpointDiscoveryServiceClient(conn)
}

// TestMadeUpViewsMakeNoGroups tries what an attacker would: thousands of requests,
// unary and streamed, each naming a network Horizon does not know. Each is refused
// with InvalidArgument naming the network, and no group is made; made-up CLUSTER_IDs
// all land in the unnamed network's one group.
func TestMadeUpViewsMakeNoGroups(t *testing.T) {
	f := newXDSFixture(t)
	client := f.edsClient()
	const n = 2000
	for i := range n {
		meta := map[string]any{"NETWORK": fmt.Sprintf("made-up-%d", i)}
		if i%2 == 1 {
			meta = map[string]any{"NETWORK": "network1", "REQUESTED_NETWORK_VIEW": fmt.Sprintf("network2,made-up-%d", i)}
		}
		nd := xdstest.NodeWithMetadata(fmt.Sprintf("sidecar~10.9.0.1~p%d.ns~ns.svc.cluster.local", i), meta)
		_, err := client.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: nd, TypeUrl: resourcev3.EndpointType})
		want := fmt.Sprintf("unknown network \"made-up-%d\"", i)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), want) {
			t.Fatalf("request %d: got %v, want InvalidArgument naming %s", i, err, want)
		}
		if i%100 == 0 { // and on a stream
			st := sotwStreamFor(t, f)
			if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: nd, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("stream %d: got %v, want InvalidArgument", i, err)
			}
		}
	}
	if got := f.groupCount(); got != 0 {
		t.Fatalf("%d groups after %d requests naming unknown networks, want 0", got, n)
	}
	for i := range n {
		nd := xdstest.NodeWithMetadata("sidecar~10.9.0.1~p.ns~ns.svc.cluster.local", map[string]any{"CLUSTER_ID": fmt.Sprintf("made-up-%d", i)})
		if _, err := f.s.ensureGroup(nd, keep); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.groupCount(); got != 1 {
		t.Fatalf("%d groups after %d made-up CLUSTER_IDs, want 1 (the unnamed network's)", got, n)
	}
	// A known cluster keeps its identity: its network may come from its label.
	nd := xdstest.NodeWithMetadata("sidecar~10.9.0.1~p.ns~ns.svc.cluster.local", map[string]any{"CLUSTER_ID": "k1"})
	g, err := f.s.ensureGroup(nd, keep)
	if err != nil || g.view.Cluster != "k1" {
		t.Fatalf("known cluster: group %+v, error %v; want the view of cluster k1", g, err)
	}
}

// TestRouterLabelsAreBounded: a router's LABELS larger than a pod's labels can be
// are refused; distinct acceptable label sets stop at the group cap with
// ResourceExhausted.
func TestRouterLabelsAreBounded(t *testing.T) {
	f := newXDSFixture(t, func(o *Options) { o.MaxGroups = 50 })
	router := func(labels map[string]any) error {
		nd := xdstest.NodeWithMetadata("router~10.0.9.1~gw.istio-system~istio-system.svc.cluster.local", map[string]any{"LABELS": labels})
		_, err := f.s.ensureGroup(nd, keep)
		return err
	}
	many := map[string]any{}
	for i := range maxLabels + 1 {
		many[fmt.Sprintf("l%d", i)] = "v"
	}
	for _, tc := range []struct {
		name   string
		labels map[string]any
	}{
		{name: "too many labels", labels: many},
		{name: "long key", labels: map[string]any{strings.Repeat("k", maxLabelKeyLen+1): "v"}},
		{name: "long value", labels: map[string]any{"app": strings.Repeat("v", maxLabelValueLen+1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := router(tc.labels); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
		})
	}
	refused := 0
	for i := range 2000 {
		err := router(map[string]any{"pod-template-hash": fmt.Sprintf("h%d", i)})
		switch {
		case err == nil:
		case status.Code(err) == codes.ResourceExhausted:
			refused++
		default:
			t.Fatalf("label set %d: %v", i, err)
		}
	}
	if got := f.groupCount(); got != 50 || refused != 2000-50 {
		t.Fatalf("%d groups, %d refused; want 50 groups (the cap) and the rest refused", got, refused)
	}
	// A view that has a group is still served at the cap.
	if err := router(map[string]any{"pod-template-hash": "h0"}); err != nil {
		t.Fatalf("existing view at the cap: %v", err)
	}
}

// TestFetchMakesNoGroup: a unary Fetch of a served view is answered without a
// group being kept.
func TestFetchMakesNoGroup(t *testing.T) {
	f := newXDSFixture(t)
	client := f.edsClient()
	for i := range 100 {
		nd := xdstest.NodeWithMetadata(fmt.Sprintf("sidecar~10.9.0.1~p%d.ns~ns.svc.cluster.local", i),
			map[string]any{"NETWORK": "network1", "REQUESTED_NETWORK_VIEW": "network1,network2"})
		resp, err := client.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: nd, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}})
		if err != nil || len(resp.GetResources()) != 1 {
			t.Fatalf("fetch: %v, error %v; want %s", resp, err, claA)
		}
	}
	if got := f.groupCount(); got != 0 {
		t.Fatalf("%d groups after unary fetches, want 0", got)
	}
}

// TestIdleGroupsAreSweptWithoutAPush: with no change to push, an idle group is
// still dropped, by the sweep timer.
func TestIdleGroupsAreSweptWithoutAPush(t *testing.T) {
	f := newXDSFixture(t)
	f.s.idleTimeout = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.s.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	kubetest.Eventually(t, 5*time.Second, func() error {
		if f.s.Pushes() < 2 { // Run's first push
			return fmt.Errorf("%d pushes", f.s.Pushes())
		}
		return nil
	})
	pushes := f.s.Pushes()
	for _, n := range []string{"network1", "network2"} {
		if _, err := f.s.ensureGroup(xdstest.Node("sidecar~1.1.1.1~a.ns~ns.svc.cluster.local", n), keep); err != nil {
			t.Fatal(err)
		}
	}
	kubetest.Eventually(t, 5*time.Second, func() error {
		if n := f.groupCount(); n != 0 {
			return fmt.Errorf("%d groups left", n)
		}
		return nil
	})
	if got := f.s.Pushes(); got != pushes {
		t.Fatalf("%d pushes during the sweep, want none", got-pushes)
	}
}

// TestGRPCBounds: a request larger than MaxMessageSize ends its stream with
// ResourceExhausted, counted as message_size in
// horizon_xds_refused_requests_total; streams past MaxStreamsPerConnection on one
// connection wait (HTTP/2 flow control) instead of being served.
func TestGRPCBounds(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newXDSFixture(t, func(o *Options) { o.MaxMessageSize = 64 << 10; o.MaxStreamsPerConnection = 2; o.Metrics = reg })
	t.Run("message size", func(t *testing.T) {
		st := sotwStreamFor(t, f)
		big := node(strings.Repeat("p", 100<<10))
		if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: big, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("got %v, want ResourceExhausted", err)
		}
		kubetest.Eventually(t, 10*time.Second, func() error {
			if got := refusedRequests(t, reg, "message_size"); got != 1 {
				return fmt.Errorf("refused message_size %v, want 1", got)
			}
			return nil
		})
	})
	t.Run("streams per connection", func(t *testing.T) {
		open := func(ctx context.Context, id string) error {
			st, err := f.ads.StreamAggregatedResources(ctx)
			if err != nil {
				return err
			}
			if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node(id), TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		for i := range 2 {
			if err := open(ctx, fmt.Sprintf("p%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancelShort()
		if err := open(short, "p3"); status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("third stream on the connection: %v, want it held back (DeadlineExceeded)", err)
		}
	})
}

// TestRouterLabelSetsShareEndpoints: routers that differ only in their labels (and
// are told apart by no Gateway) get their endpoints, listeners and clusters from
// shares — built and encoded once, the same published
// bytes — so a flood of label sets costs a group each, not a copy of every
// assignment. A change reaches every such group, and the share goes with the last
// group that uses it.
func TestRouterLabelSetsShareEndpoints(t *testing.T) {
	f := newXDSFixture(t, func(o *Options) { o.DefaultPassthrough = true })
	var groups []*group
	for i := range 200 {
		nd := xdstest.NodeWithMetadata(fmt.Sprintf("router~10.0.9.%d~gw.istio-system~istio-system.svc.cluster.local", i%250),
			map[string]any{"NETWORK": "network1", "LABELS": map[string]any{"pod-template-hash": fmt.Sprintf("h%d", i)}})
		g, err := f.s.ensureGroup(nd, keep)
		if err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
	}
	name := SNIName(hostA, 80)
	before := groups[0].Feed().Current().Resources(resourcev3.EndpointType).Get(name)
	// A router is sent the mTLS endpoints of its network.
	sh := &clusterregistry.Shard{
		Service:   clusterregistry.Service{Host: hostA, Name: "web", Namespace: "ns", Cluster: "c1", Ports: []clusterregistry.ServicePort{{Name: "http", Port: 80}}},
		Endpoints: map[int32][]clusterregistry.Endpoint{80: {{Address: "10.0.0.2", Port: 8080, Ready: true, Cluster: "c1", TLSMode: network.TLSModeIstio}}},
	}
	f.src.setShard(hostA, "c1", sh)
	f.s.HostChanged(hostA)
	f.s.push(time.Now())
	f.s.pushMu.Lock()
	shares, entries, routerShares := len(f.s.shares), f.s.built.Len(), len(f.s.routerShares)
	f.s.pushMu.Unlock()
	if shares != 1 || routerShares != 1 {
		t.Fatalf("%d endpoint shares and %d router shares for 200 label sets of one network that no Gateway tells apart, want 1 and 1", shares, routerShares)
	}
	if entries > 2 {
		t.Fatalf("%d built assignments cached for 200 label sets of 2 services, want at most 2", entries)
	}
	first := groups[0].Feed().Current().Resources(resourcev3.EndpointType)
	if first.Len() != 2 {
		t.Fatalf("router endpoints: %d assignments, want 2", first.Len())
	}
	if n := groups[0].Feed().Current().Resources(resourcev3.ClusterType).Len(); n != 2 {
		t.Fatalf("router clusters: %d, want 2 (default passthrough)", n)
	}
	for i, g := range groups {
		eps := g.Feed().Current().Resources(resourcev3.EndpointType)
		if eps != first {
			t.Fatalf("group %d publishes its own endpoints, want the shared ones", i)
		}
		for _, typ := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
			if got, want := g.Feed().Current().Resources(typ), groups[0].Feed().Current().Resources(typ); got != want {
				t.Fatalf("group %d publishes its own %s, want the shared ones", i, typ)
			}
		}
	}
	r := first.Get(name)
	if before == nil || r == nil || r.Version() == before.Version() {
		t.Fatalf("shared endpoints of %s: %v before the change, %v after; want a new version", name, before, r)
	}
	m, err := r.Message()
	if err != nil {
		t.Fatal(err)
	}
	if got := addresses(m.(*endpointv3.ClusterLoadAssignment)); !slices.Contains(got, "10.0.0.2") {
		t.Fatalf("shared endpoints of %s after the change: %v, want 10.0.0.2 in them", name, got)
	}
	f.s.idleTimeout = 0
	f.s.pushMu.Lock()
	f.s.sweep(time.Now().Add(time.Second))
	shares, routerShares = len(f.s.shares), len(f.s.routerShares)
	f.s.pushMu.Unlock()
	if shares != 0 || routerShares != 0 {
		t.Fatalf("%d endpoint shares and %d router shares after every group was swept, want none", shares, routerShares)
	}
}

// refusedRequests reads horizon_xds_refused_requests_total{reason} from reg.
func refusedRequests(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "horizon_xds_refused_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("horizon_xds_refused_requests_total{reason=%q} not registered", reason)
	return 0
}
