package eds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// marshal encodes one resource the way it is sent to proxies: deterministically, so
// that equal resources give equal bytes.
//
// Built with the vtprotobuf tag (as make does), the envoy protos carry generated
// encoders, MarshalVTStrict, that need no reflection but write map entries in Go's
// random map order. marshal uses them only where that cannot show: for
// ClusterLoadAssignments, the resource sent most, when no map in them has two
// entries or more (vtDeterministic; the builder's never do). Everything else, and
// every build without the tag, goes through proto's deterministic encoder. The two
// encoders place oneof fields differently, so the same resource encodes to
// different (equally valid) bytes in a build with the tag and one without; within
// one binary, equal resources give equal bytes.
func marshal(m proto.Message) ([]byte, error) {
	if vt, ok := m.(vtMarshaler); ok && vtDeterministic(m) {
		return vt.MarshalVTStrict()
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// vtMarshaler is the generated encoder of a message compiled with the vtprotobuf tag.
type vtMarshaler interface {
	MarshalVTStrict() ([]byte, error)
}

// vtDeterministic reports whether MarshalVTStrict encodes m deterministically, that
// is whether no map in m has two entries or more. It knows the map fields a
// ClusterLoadAssignment can reach (TestVTDeterministicCoversEveryMap lists them):
// named_endpoints and the LEDS config under lb_config are refused when set, since
// the builder sets neither; Metadata's filter_metadata and typed_filter_metadata, and
// the Struct fields below, are checked on the localities and endpoints.
func vtDeterministic(m proto.Message) bool {
	cla, ok := m.(*endpointv3.ClusterLoadAssignment)
	if !ok || len(cla.NamedEndpoints) > 0 {
		return false
	}
	// Endpoints share Metadata: check each once per run of endpoints sharing it. The
	// builder's mTLS metadata needs no check (TestVTDeterministic checks it).
	checked := tlsModeMetadata
	small := func(md *corev3.Metadata) bool {
		if md == nil || md == checked {
			return true
		}
		if !smallMetadata(md) {
			return false
		}
		checked = md
		return true
	}
	for _, l := range cla.Endpoints {
		if l.LbConfig != nil || !small(l.Metadata) {
			return false
		}
		for _, e := range l.LbEndpoints {
			if !small(e.Metadata) {
				return false
			}
		}
	}
	return true
}

func smallMetadata(md *corev3.Metadata) bool {
	if len(md.FilterMetadata) > 1 || len(md.TypedFilterMetadata) > 1 {
		return false
	}
	for _, s := range md.FilterMetadata {
		if !smallStruct(s) {
			return false
		}
	}
	return true // typed_filter_metadata holds Anys, whose contents are already bytes
}

func smallStruct(s *structpb.Struct) bool {
	if len(s.GetFields()) > 1 {
		return false
	}
	for _, v := range s.GetFields() {
		if !smallValue(v) {
			return false
		}
	}
	return true
}

func smallValue(v *structpb.Value) bool {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		return smallStruct(k.StructValue)
	case *structpb.Value_ListValue:
		for _, e := range k.ListValue.GetValues() {
			if !smallValue(e) {
				return false
			}
		}
	}
	return true
}
