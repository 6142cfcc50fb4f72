package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/horizon-mesh/horizon/eds"
)

const typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"

// rawResource is a resource as it arrived: its version (delta only) and the bytes of
// its Any.
type rawResource struct {
	version string
	value   []byte
}

// rawView is what one stream was sent of one type: the last state-of-the-world
// version_info, and every resource by name.
type rawView struct {
	version string
	res     map[string]rawResource
}

// xdsStreams opens ADS streams to one replica, each ending with the test.
type xdsStreams struct {
	t    *testing.T
	conn *grpc.ClientConn
}

func dialXDS(t *testing.T, addr string) *xdsStreams {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &xdsStreams{t: t, conn: conn}
}

// streamTimeout bounds each stream the test opens: a replica that never sends what
// is asked fails the test rather than hanging it.
const streamTimeout = time.Minute

// sotw subscribes to names of typ (none: wildcard) on a state-of-the-world stream and
// ACKs until it holds every name (for a wildcard, until the first response).
func (x *xdsStreams) sotw(node *corev3.Node, typ string, names []string) rawView {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(x.t.Context(), streamTimeout)
	defer cancel()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(x.conn).StreamAggregatedResources(ctx)
	if err != nil {
		x.t.Fatal(err)
	}
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names}); err != nil {
		x.t.Fatal(err)
	}
	v := rawView{res: map[string]rawResource{}}
	for {
		resp, err := s.Recv()
		if err != nil {
			x.t.Fatalf("%s state of the world, %s: %v (holding %v)", node.GetId(), typ, err, slices.Sorted(maps.Keys(v.res)))
		}
		v.version = resp.GetVersionInfo()
		for _, a := range resp.GetResources() {
			v.res[resourceName(x.t, a.GetTypeUrl(), a.GetValue())] = rawResource{value: a.GetValue()}
		}
		if err := s.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: names, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			x.t.Fatal(err)
		}
		if len(names) == 0 || holdsAll(v, names) {
			return v
		}
	}
}

func holdsAll(v rawView, names []string) bool {
	for _, n := range names {
		if _, ok := v.res[n]; !ok {
			return false
		}
	}
	return true
}

// deltaStream is an open delta ADS stream.
type deltaStream struct {
	t   *testing.T
	s   discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	typ string
}

// delta opens a delta stream subscribing to names of typ (none: wildcard), naming
// initial as the versions held.
func (x *xdsStreams) delta(node *corev3.Node, typ string, names []string, initial map[string]string) *deltaStream {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(x.t.Context(), streamTimeout)
	x.t.Cleanup(cancel)
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(x.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		x.t.Fatal(err)
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typ, ResourceNamesSubscribe: names, InitialResourceVersions: initial}); err != nil {
		x.t.Fatal(err)
	}
	return &deltaStream{t: x.t, s: s, typ: typ}
}

// next receives and ACKs one response, returning its resources and removals.
func (d *deltaStream) next() (map[string]rawResource, []string) {
	d.t.Helper()
	resp, err := d.s.Recv()
	if err != nil {
		d.t.Fatalf("delta %s: %v", d.typ, err)
	}
	if resp.GetTypeUrl() != d.typ {
		d.t.Fatalf("delta response of type %s on a %s stream", resp.GetTypeUrl(), d.typ)
	}
	out := map[string]rawResource{}
	for _, r := range resp.GetResources() {
		out[r.GetName()] = rawResource{version: r.GetVersion(), value: r.GetResource().GetValue()}
	}
	if err := d.s.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: d.typ, ResponseNonce: resp.GetNonce()}); err != nil {
		d.t.Fatal(err)
	}
	return out, resp.GetRemovedResources()
}

// until receives until the stream holds every one of names.
func (d *deltaStream) until(names []string) rawView {
	d.t.Helper()
	v := rawView{res: map[string]rawResource{}}
	for !holdsAll(v, names) {
		got, removed := d.next()
		maps.Copy(v.res, got)
		for _, n := range removed {
			delete(v.res, n)
		}
	}
	return v
}

// resourceName decodes the name of a state-of-the-world resource.
func resourceName(t *testing.T, typ string, b []byte) string {
	t.Helper()
	var m interface {
		proto.Message
		GetName() string
	}
	switch typ {
	case typeCLA:
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := proto.Unmarshal(b, cla); err != nil {
			t.Fatalf("decode %s: %v", typ, err)
		}
		return cla.GetClusterName()
	case typeCluster:
		m = &clusterv3.Cluster{}
	case typeListener:
		m = &listenerv3.Listener{}
	default:
		t.Fatalf("unexpected resource type %s", typ)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("decode %s: %v", typ, err)
	}
	return m.GetName()
}

// sameView fails the test unless a and b hold the same resources, byte for byte, at
// the same versions.
func sameView(t *testing.T, what string, a, b rawView) {
	t.Helper()
	if a.version != b.version {
		t.Errorf("%s: version_info %q on replica 1, %q on replica 2", what, a.version, b.version)
	}
	if an, bn := slices.Sorted(maps.Keys(a.res)), slices.Sorted(maps.Keys(b.res)); !slices.Equal(an, bn) {
		t.Errorf("%s: replica 1 sent %v, replica 2 %v", what, an, bn)
		return
	}
	if len(a.res) == 0 {
		t.Errorf("%s: nothing sent", what)
	}
	for n, ra := range a.res {
		rb := b.res[n]
		if ra.version != rb.version {
			t.Errorf("%s %s: version %q on replica 1, %q on replica 2", what, n, ra.version, rb.version)
		}
		if !bytes.Equal(ra.value, rb.value) {
			t.Errorf("%s %s: bytes differ between the replicas (%d and %d bytes)", what, n, len(ra.value), len(rb.value))
		}
	}
}

func routerNode(network int) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{eds.MetaNetwork: networkName(network)})
	return &corev3.Node{Id: fmt.Sprintf("router~10.255.0.%d~gw-%d.istio-system~istio-system.svc.cluster.local", network+1, network+1), Cluster: "gw", Metadata: md}
}

// TestReplicasInterchangeable runs two horizon serve processes against the same real
// API servers. For the same view — sidecars and gateways (router) on each network —
// both send the same resources, byte for byte, at the same versions, over state of
// the world and delta, for every type each is sent. A delta proxy that held
// replica 1's resources reconnects to replica 2 naming them in
// initial_resource_versions: it is sent only the one it does not hold and the one
// it holds at a wrong version, and then the change made in a cluster.
func TestReplicasInterchangeable(t *testing.T) {
	bin := buildHorizon(t)
	ctx := t.Context()
	cfg := defaultConfig()
	cfg.Services, cfg.Endpoints, cfg.Replicas, cfg.Horizon = 4, 2, 2, bin
	l := &loadRun{cfg: cfg, progress: testLog{t}, rep: &report{}}
	env, c1, err := l.setup(ctx)
	if env != nil {
		t.Cleanup(env.Close)
	}
	if err != nil {
		t.Fatal(err)
	}
	err = l.startHorizon(ctx, bin, t.TempDir(), c1)
	t.Cleanup(func() {
		for _, h := range l.hs {
			h.stop()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	a, b := dialXDS(t, l.hs[0].xdsAddr), dialXDS(t, l.hs[1].xdsAddr)
	var clas []string
	for j := range cfg.Services {
		clas = append(clas, claName(j))
	}

	type typeNames struct {
		typ   string
		names []string // nil: wildcard
	}
	for n := range cfg.Clusters {
		views := []struct {
			name  string
			node  *corev3.Node
			types []typeNames
		}{
			{fmt.Sprintf("sidecar on %s", networkName(n)), proxySpec{index: 1000 + n, network: n}.node(),
				[]typeNames{{typeCluster, nil}, {typeCLA, clas}}},
			{fmt.Sprintf("router on %s", networkName(n)), routerNode(n),
				[]typeNames{{typeListener, nil}, {typeCluster, nil}, {typeCLA, nil}}},
		}
		for _, v := range views {
			for _, tn := range v.types {
				names := tn.names
				if tn.typ == typeCLA && names == nil {
					// A gateway's EDS: the clusters it was sent.
					names = slices.Sorted(maps.Keys(a.sotw(v.node, typeCluster, nil).res))
				}
				what := fmt.Sprintf("%s, %s", v.name, tn.typ)
				sa, sb := a.sotw(v.node, tn.typ, names), b.sotw(v.node, tn.typ, names)
				sameView(t, what+" (state of the world)", sa, sb)
				want := names
				if want == nil {
					want = slices.Sorted(maps.Keys(sa.res))
				}
				da := a.delta(v.node, tn.typ, names, nil).until(want)
				db := b.delta(v.node, tn.typ, names, nil).until(want)
				sameView(t, what+" (delta)", da, db)
				for name, r := range da.res {
					if !bytes.Equal(r.value, sa.res[name].value) {
						t.Errorf("%s %s: delta and state-of-the-world bytes differ", what, name)
					}
				}
				t.Logf("%s: %d resources compared (version_info %s on replica 1)", what, len(sa.res), sa.version)
			}
		}
	}

	// A delta sidecar held replica 1's assignments; it reconnects to replica 2
	// without one of them and with another at a wrong version.
	node := proxySpec{index: 2000, network: 0}.node()
	held := a.delta(node, typeCLA, clas, nil).until(clas)
	missing, wrong := claName(0), claName(1)
	initial := map[string]string{}
	for name, r := range held.res {
		initial[name] = r.version
	}
	delete(initial, missing)
	initial[wrong] = "not-a-version"
	d := b.delta(node, typeCLA, clas, initial)
	got, removed := d.next()
	if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, []string{missing, wrong}) || len(removed) != 0 {
		t.Errorf("on reconnecting with initial_resource_versions, replica 2 sent %v and removed %v; want only %s (not held) and %s (held at a wrong version)",
			names, removed, missing, wrong)
	}
	for name, r := range got {
		if h := held.res[name]; r.version != h.version || !bytes.Equal(r.value, h.value) {
			t.Errorf("%s from replica 2 differs from replica 1's", name)
		}
	}
	// A change is still sent, and only it.
	changed := 2
	if _, _, _, err := l.remote.toggle(ctx, changed, func(int) {}); err != nil {
		t.Fatal(err)
	}
	got, removed = d.next()
	if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, []string{claName(changed)}) || len(removed) != 0 {
		t.Errorf("after a change of %s, replica 2 sent %v and removed %v", serviceName(changed), names, removed)
	} else if got[claName(changed)].version == initial[claName(changed)] {
		t.Errorf("changed %s sent at its old version", claName(changed))
	}
}

// testLog writes the tool's progress lines to the test log.
type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(b, "\n")))
	return len(b), nil
}
