package eds

import (
	"log/slog"
	"maps"
	"slices"

	"sync"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/eds/xdsserver"
	"github.com/horizon-mesh/horizon/network"
)

// fakeSource is an in-memory EndpointSource for unit tests of the push logic; the
// registry itself is tested against real API servers.
type fakeSource struct {
	mu     sync.Mutex
	shards map[string]map[network.ClusterID]*clusterregistry.Shard
	nets   map[network.ClusterID]network.NetworkID // ClusterNetworks, if set
}

func (f *fakeSource) Services(host string) map[network.ClusterID]*clusterregistry.Shard {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shards[host]
}

func (f *fakeSource) Hosts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for h := range f.shards {
		out = append(out, h)
	}
	return out
}

func (f *fakeSource) Subscribe(func(clusterregistry.Change)) {}

// ClusterNetworks makes the networks the tests name known: clusters with no
// endpoints whose system namespaces carry them.
func (f *fakeSource) ClusterNetworks() map[network.ClusterID]network.NetworkID {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nets != nil {
		return maps.Clone(f.nets)
	}
	return map[network.ClusterID]network.NetworkID{"k1": "network1", "k2": "network2", "k3": "n1"}
}

// setShard sets what cluster id knows of host (nothing if sh is nil). The maps
// Services returned before are not changed.
func (f *fakeSource) setShard(host string, id network.ClusterID, sh *clusterregistry.Shard) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := maps.Clone(f.shards[host])
	if m == nil {
		m = map[network.ClusterID]*clusterregistry.Shard{}
	}
	if sh == nil {
		delete(m, id)
	} else {
		m[id] = sh
	}
	if len(m) == 0 {
		delete(f.shards, host)
	} else {
		f.shards[host] = m
	}
}

func (f *fakeSource) set(host string, ips ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh := &clusterregistry.Shard{
		Service:   clusterregistry.Service{Host: host, Name: "web", Namespace: "ns", Cluster: "c1", Ports: []clusterregistry.ServicePort{{Name: "http", Port: 80}}},
		Endpoints: map[int32][]clusterregistry.Endpoint{},
	}
	for _, ip := range ips {
		sh.Endpoints[80] = append(sh.Endpoints[80], clusterregistry.Endpoint{Address: ip, Port: 8080, Ready: true, Cluster: "c1"})
	}
	if len(ips) == 0 {
		delete(f.shards, host)
		return
	}
	f.shards[host] = map[network.ClusterID]*clusterregistry.Shard{"c1": sh}
}

// newTestServer returns a Server on src, with no networks, after its first push;
// edits change its options.
func newTestServer(t *testing.T, src EndpointSource, edits ...func(*Options)) *Server {
	t.Helper()
	opts := Options{
		Source: src, Networks: func() *network.Networks { return nil },
		DebounceAfter: time.Millisecond, DebounceMax: time.Second, Logger: slog.New(slog.DiscardHandler),
	}
	for _, edit := range edits {
		edit(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.push(time.Now())
	return s
}

// keep, as ensureGroup's attach, makes the group be kept, as a stream does.
func keep(xdsserver.Group) {}

// TestCacheHoldsOneEntryPerResource churns one service's endpoints: the cache of
// built assignments must keep one entry per (group, resource), not one per version,
// and drop a deleted service's entries.
func TestCacheHoldsOneEntryPerResource(t *testing.T) {
	src := &fakeSource{shards: map[string]map[network.ClusterID]*clusterregistry.Shard{}}
	const host = "web.ns.svc.cluster.local"
	src.set(host, "10.0.0.1")
	s := newTestServer(t, src)
	for _, n := range []string{"network1", "network2"} {
		if _, err := s.ensureGroup(xdstest.Node("sidecar~1.1.1.1~a.ns~ns.svc.cluster.local", n), keep); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		src.set(host, "10.0.0.1", "10.0.1."+string(rune('0'+i%10)))
		s.HostChanged(host)
		s.push(time.Now())
	}
	if n := s.built.Len(); n != 2 {
		t.Fatalf("cache holds %d entries after 200 changes, want 2 (one per group)", n)
	}
	src.set(host)
	s.HostChanged(host)
	s.push(time.Now())
	if n := s.built.Len(); n != 0 {
		t.Fatalf("cache holds %d entries after the service went, want 0", n)
	}
}

// TestEncodedResourcesDecodeToThemselves checks, for every type served, that the
// bytes a group publishes decode to the resource built, under its name.
func TestEncodedResourcesDecodeToThemselves(t *testing.T) {
	const host = "helloworld.sample.svc.cluster.local"
	nets, err := network.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	cla := BuildLoadAssignment(ClusterName(host, 5000), map[network.ClusterID][]clusterregistry.Endpoint{
		"c1": {{Address: "10.0.0.1", Port: 5000, Ready: true, Cluster: "c1", TLSMode: network.TLSModeIstio}},
	}, NewTopology(nets, nil), View{Role: RoleSidecar})
	listeners, _ := buildRouterResources([]PassthroughServer{{Gateway: "a/b", Port: 443, Hosts: []string{"*"}}},
		map[string]*hostState{host: {namespace: "sample", ports: []int32{5000}}}, nil)
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, r := range []types.Resource{cla, BuildCluster(host, 5000, PeerIdentities{IDs: []string{"spiffe://cluster.local/ns/sample/sa/helloworld"}}), buildGRPCListener(host, 5000), buildGRPCRoute(host, 5000), listeners[0]} {
		typ := "type.googleapis.com/" + string(r.ProtoReflect().Descriptor().FullName())
		snap, changed := versionList(nil, []*xdsserver.Resource{s.encode(typ, r)})
		if !changed {
			t.Fatalf("%T: first publish reported no change", r)
		}
		name := resourceName(r)
		res := snap.Get(name)
		if name == "" || res == nil || res.Name() != name {
			t.Fatalf("%T: published as %v, want name %q", r, snap.Names(), name)
		}
		dec := r.ProtoReflect().New().Interface()
		if err := res.Any().UnmarshalTo(dec); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(dec, r) {
			t.Errorf("%T changed by encoding:\n got %v\nwant %v", r, dec, r)
		}
		// Rebuilt but equal: same version, same encoded resource, no new type version.
		if again, changed := versionList(snap, []*xdsserver.Resource{s.encode(typ, proto.Clone(r).(types.Resource))}); changed || again != snap || again.Get(name) != res {
			t.Errorf("%T: an equal rebuilt resource counted as a change", r)
		}
	}
}

// TestIdleGroupsAreDropped: a group whose proxies all left (a router's labels
// before a rollout) is dropped after groupIdleTimeout, and comes back when a proxy
// of its view connects again.
func TestIdleGroupsAreDropped(t *testing.T) {
	f := newXDSFixture(t)
	if _, err := f.s.ensureGroup(xdstest.Node("router~10.0.0.1~gw-old.ns~ns.svc.cluster.local", "n1"), keep); err != nil {
		t.Fatal(err)
	}
	st := sotwStreamFor(t, f)
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node("p1"), TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	recvSotw(t, st)
	groups := func() []string {
		f.s.pushMu.Lock()
		defer f.s.pushMu.Unlock()
		return slices.Sorted(maps.Keys(f.s.groups))
	}
	if got := groups(); len(got) != 2 {
		t.Fatalf("groups %v, want the router's and the sidecar's", got)
	}
	f.change(hostB, "10.0.1.5") // starts the idle clock
	f.s.pushMu.Lock()
	for _, g := range f.s.groups {
		if !g.emptySince.IsZero() {
			g.emptySince = g.emptySince.Add(-2 * groupIdleTimeout) // as if idle that long
		}
	}
	f.s.pushMu.Unlock()
	f.change(hostB, "10.0.1.6")
	if got := groups(); len(got) != 1 || got[0] != ViewOf(node("p1")).Key() {
		t.Fatalf("groups %v, want only the connected sidecar's", got)
	}
	f.change(hostA, "10.0.0.7") // the sidecar's group still serves
	if _, clas := recvSotw(t, st); len(addresses(clas[claA])) != 1 || addresses(clas[claA])[0] != "10.0.0.7" {
		t.Fatalf("after its group survived the idle sweep, the sidecar got %v", clas)
	}
}

// TestGroupsHoldEncodedAssignments: a group's endpoints are kept encoded, and an
// assignment rebuilt equal keeps the Resource published before (the same bytes,
// shared with the cache), so that nothing is held twice and the type's version
// stays; one rebuilt different is published anew and decodes to what was built.
func TestGroupsHoldEncodedAssignments(t *testing.T) {
	src := &fakeSource{shards: map[string]map[network.ClusterID]*clusterregistry.Shard{}}
	const host = "web.ns.svc.cluster.local"
	name := ClusterName(host, 80)
	src.set(host, "10.0.0.1")
	s := newTestServer(t, src)
	g, err := s.ensureGroup(node("p1"), keep)
	if err != nil {
		t.Fatal(err)
	}
	published := func() *xdsserver.Resources {
		s.pushMu.Lock()
		defer s.pushMu.Unlock()
		return g.edsSent
	}
	before := published()
	res := before.Get(name)
	if res == nil {
		t.Fatalf("group publishes %v, want %s", before.Names(), name)
	}
	s.HostChanged(host) // rebuilt, unchanged
	s.push(time.Now())
	after := published()
	if after != before || after.Get(name) != res {
		t.Fatalf("an assignment rebuilt equal was published anew (version %s → %s)", before.Version(), after.Version())
	}
	s.pushMu.Lock()
	shared := g.eds.clas[name]
	b, ok := s.built.Peek(cacheKey{group: g.view.endpointsKey(), name: name})
	s.pushMu.Unlock()
	if shared != res || !ok || b.res != res {
		t.Fatalf("the share holds %p and the cache %p, want both the published %p", shared, b.res, res)
	}

	src.set(host, "10.0.0.2")
	s.HostChanged(host)
	s.push(time.Now())
	changed := published().Get(name)
	if changed == nil || changed == res || changed.Version() == res.Version() {
		t.Fatalf("a changed assignment kept version %s", res.Version())
	}
	m, err := changed.Message()
	if err != nil {
		t.Fatal(err)
	}
	if got := addresses(m.(*endpointv3.ClusterLoadAssignment)); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("published %v, want [10.0.0.2]", got)
	}
}
