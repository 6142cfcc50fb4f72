package eds

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/horizon-mesh/horizon/network"
)

// TestMarshal checks marshal with and without the vtprotobuf tag (make test runs
// both): equal resources give equal bytes, which decode back to an equal message and
// encode again to the same bytes. The resources with maps of several entries are the
// ones the generated encoder would write in random order.
func TestMarshal(t *testing.T) {
	_, vt := any(&endpointv3.ClusterLoadAssignment{}).(vtMarshaler)
	t.Logf("generated encoders compiled in: %v", vt)
	nets := testNetworks(t)
	topo := NewTopology(nets, []network.Gateway{gw("network2", "c2", "192.0.2.20", 443), gw("network2", "", "192.0.2.21", 443)})
	eps := byCluster(
		ep("c1", "10.1.0.5", true, "us/east-1a"), ep("c1", "10.1.0.6", false, "us/east-1a"),
		ep("c2", "10.2.0.7", true, "us/west-2b"), ep("c3", "10.3.0.1", true, "us/west-2c"),
		ep("c4", "10.4.0.1", true), ep("c5", "10.9.0.1", false, "eu/north-1a"),
	)
	built := func(net network.NetworkID) func() proto.Message {
		return func() proto.Message {
			return BuildLoadAssignment(ClusterName("helloworld.sample.svc.cluster.local", 5000), eps, topo, View{Role: RoleSidecar, Network: net})
		}
	}
	tests := []struct {
		name  string
		build func() proto.Message // called again for every encoding
	}{
		{"built, network1", built("network1")},
		{"built, network2", built("network2")},
		{"built, no network", built("")},
		{"metadata maps of several entries", func() proto.Message { return claWithMetadata(t, bigMetadata(t)) }},
		{"named endpoints", func() proto.Message {
			cla := claWithMetadata(t, nil)
			cla.NamedEndpoints = map[string]*endpointv3.Endpoint{"a": {Hostname: "a"}, "b": {Hostname: "b"}, "c": {Hostname: "c"}}
			return cla
		}},
		{"a cluster", func() proto.Message {
			return BuildCluster("helloworld.sample.svc.cluster.local", 5000, PeerIdentities{IDs: []string{"spiffe://cluster.local/ns/sample/sa/a", "spiffe://cluster.local/ns/sample/sa/b"}})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.build()
			got, err := marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 50 {
				again, err := marshal(tt.build())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(again, got) {
					t.Fatalf("encoding %d of an equal resource differs:\n got %x\nwant %x", i, again, got)
				}
			}
			back := m.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(got, back); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(back, m) {
				t.Error("decoded resource differs from the original")
			}
			again, err := marshal(back)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, got) {
				t.Errorf("encoding the decoded resource differs:\n got %x\nwant %x", again, got)
			}
		})
	}
}

func TestVTDeterministic(t *testing.T) {
	nets := testNetworks(t)
	topo := NewTopology(nets, []network.Gateway{gw("network2", "", "192.0.2.20", 443)})
	big := bigMetadata(t)
	oneEntry := func(s *structpb.Struct) *corev3.Metadata {
		return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": s}}
	}
	mustStruct := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name string
		m    proto.Message
		want bool
	}{
		{"built", BuildLoadAssignment("c", byCluster(ep("c1", "10.1.0.1", true), ep("c2", "10.2.0.1", true), ep("c4", "10.4.0.1", false)), topo, View{Role: RoleSidecar, Network: "network1"}), true},
		{"built, empty", BuildLoadAssignment("c", nil, topo, View{}), true},
		{"not a ClusterLoadAssignment", BuildCluster("h", 80, PeerIdentities{Prefix: "spiffe://cluster.local/ns/ns/sa/"}), false},
		{"one entry everywhere", claWithMetadata(t, oneEntry(mustStruct(map[string]any{"a": map[string]any{"b": []any{map[string]any{"c": 1}}}}))), true},
		{"several filter_metadata entries", claWithMetadata(t, big), false},
		{"several typed_filter_metadata entries", claWithMetadata(t, &corev3.Metadata{TypedFilterMetadata: big.TypedFilterMetadata}), false},
		{"several struct fields", claWithMetadata(t, oneEntry(mustStruct(map[string]any{"a": 1, "b": 2}))), false},
		{"several fields in a nested struct", claWithMetadata(t, oneEntry(mustStruct(map[string]any{"a": map[string]any{"b": 1, "c": 2}}))), false},
		{"several fields in a struct in a list", claWithMetadata(t, oneEntry(mustStruct(map[string]any{"a": []any{1, map[string]any{"b": 1, "c": 2}}}))), false},
		{"several entries on the locality only", func() proto.Message {
			cla := claWithMetadata(t, nil)
			cla.Endpoints[0].Metadata = big
			return cla
		}(), false},
		{"named endpoints", func() proto.Message {
			cla := claWithMetadata(t, nil)
			cla.NamedEndpoints = map[string]*endpointv3.Endpoint{"a": {}}
			return cla
		}(), false},
		{"lb_config", func() proto.Message {
			cla := claWithMetadata(t, nil)
			cla.Endpoints[0].LbConfig = &endpointv3.LocalityLbEndpoints_LoadBalancerEndpoints{LoadBalancerEndpoints: &endpointv3.LocalityLbEndpoints_LbEndpointList{}}
			return cla
		}(), false},
	}
	if !smallMetadata(tlsModeMetadata) {
		t.Error("the builder's mTLS metadata has a map of several entries, which vtDeterministic assumes it has not")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := vtDeterministic(tt.m); got != tt.want {
				t.Errorf("vtDeterministic = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestVTDeterministicCoversEveryMap lists the map fields a ClusterLoadAssignment can
// reach, by path. If an update of the envoy protos changes the list, vtDeterministic
// must learn the new paths before marshal can trust the generated encoder with them.
func TestVTDeterministicCoversEveryMap(t *testing.T) {
	var got []string
	onPath := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor, path string)
	walk = func(md protoreflect.MessageDescriptor, path string) {
		if onPath[md.FullName()] {
			return // a recursive message (Struct): vtDeterministic recurses too
		}
		onPath[md.FullName()] = true
		defer delete(onPath, md.FullName())
		fields := md.Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			p := path + "." + string(f.Name())
			if o := f.ContainingOneof(); o != nil && o.FullName() == "envoy.config.endpoint.v3.LocalityLbEndpoints.lb_config" {
				continue // refused when set
			}
			switch {
			case f.IsMap():
				got = append(got, p)
				if v := f.MapValue().Message(); v != nil && v.FullName() != "google.protobuf.Any" {
					walk(v, p+"[]")
				}
			case f.Message() != nil && f.Message().FullName() != "google.protobuf.Any":
				walk(f.Message(), p)
			}
		}
	}
	walk((&endpointv3.ClusterLoadAssignment{}).ProtoReflect().Descriptor(), "cla")
	want := []string{
		"cla.endpoints.lb_endpoints.metadata.filter_metadata",
		"cla.endpoints.lb_endpoints.metadata.filter_metadata[].fields",
		"cla.endpoints.lb_endpoints.metadata.typed_filter_metadata",
		"cla.endpoints.metadata.filter_metadata",
		"cla.endpoints.metadata.filter_metadata[].fields",
		"cla.endpoints.metadata.typed_filter_metadata",
		"cla.named_endpoints", // refused when set
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("map fields reachable from a ClusterLoadAssignment:\n  %s\nvtDeterministic covers\n  %s",
			fmt.Sprint(got), fmt.Sprint(want))
	}
}

// bigMetadata has several entries in every map a Metadata reaches.
func bigMetadata(t *testing.T) *corev3.Metadata {
	t.Helper()
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}, TypedFilterMetadata: map[string]*anypb.Any{}}
	for i := range 5 {
		s, err := structpb.NewStruct(map[string]any{
			"a": "x", "b": float64(i), "c": true, "d": map[string]any{"e": 1, "f": "g", "h": []any{"i", map[string]any{"j": 1, "k": 2}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		md.FilterMetadata[fmt.Sprintf("filter%d", i)] = s
		a, err := anypb.New(wrapperspb.String(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		md.TypedFilterMetadata[fmt.Sprintf("typed%d", i)] = a
	}
	return md
}

// claWithMetadata is a small ClusterLoadAssignment whose endpoints carry md.
func claWithMetadata(t *testing.T, md *corev3.Metadata) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	cla := BuildLoadAssignment("c", byCluster(ep("c1", "10.1.0.1", true), ep("c1", "10.1.0.2", false)), NewTopology(testNetworks(t), nil), View{})
	for _, l := range cla.Endpoints {
		for _, e := range l.LbEndpoints {
			e.Metadata = md
		}
	}
	return cla
}
