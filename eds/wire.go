package eds

import (
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// Responses without encoding. A resource is encoded once per group when it
// changes (versionType); with the codec below, a response is handed to gRPC's
// transport as a list of byte slices — a few header bytes of its own, then each
// resource's shared bytes — instead of being encoded, copied, into a buffer of its
// own for every proxy. Serving a fleet then allocates next to nothing per
// response, which keeps the heap's peak, and so the process's memory, low.

// Field numbers of the messages assembled here (envoy/service/discovery/v3).
const (
	anyTypeURL, anyValue = 1, 2

	sotwVersion, sotwResources, sotwTypeURL, sotwNonce = 1, 2, 4, 5

	deltaSystemVersion, deltaResources, deltaTypeURL, deltaNonce, deltaRemoved = 1, 2, 4, 5, 6

	resVersion, resResource, resName = 1, 2, 3
)

// newResource returns a published resource: its encoding b as an Any, the delta
// form, and the prefixes that put b in a response without copying it.
func newResource(typ, name, version string, msg types.Resource, b []byte) *resource {
	a := &anypb.Any{TypeUrl: typ, Value: b}
	r := &resource{version: version, any: a, msg: msg,
		delta: &discoverygrpc.Resource{Name: name, Version: version, Resource: a}}

	// Any{type_url, value} up to value's bytes.
	anyHead := protowire.AppendTag(nil, anyTypeURL, protowire.BytesType)
	anyHead = protowire.AppendString(anyHead, typ)
	anyHead = protowire.AppendTag(anyHead, anyValue, protowire.BytesType)
	anyHead = protowire.AppendVarint(anyHead, uint64(len(b)))
	anyLen := len(anyHead) + len(b)

	// DiscoveryResponse.resources: one Any.
	r.sotwPrefix = protowire.AppendTag(nil, sotwResources, protowire.BytesType)
	r.sotwPrefix = protowire.AppendVarint(r.sotwPrefix, uint64(anyLen))
	r.sotwPrefix = append(r.sotwPrefix, anyHead...)

	// DeltaDiscoveryResponse.resources: Resource{version, name, resource: Any}.
	inner := protowire.AppendTag(nil, resVersion, protowire.BytesType)
	inner = protowire.AppendString(inner, version)
	inner = protowire.AppendTag(inner, resName, protowire.BytesType)
	inner = protowire.AppendString(inner, name)
	inner = protowire.AppendTag(inner, resResource, protowire.BytesType)
	inner = protowire.AppendVarint(inner, uint64(anyLen))
	r.deltaPrefix = protowire.AppendTag(nil, deltaResources, protowire.BytesType)
	r.deltaPrefix = protowire.AppendVarint(r.deltaPrefix, uint64(len(inner)+anyLen))
	r.deltaPrefix = append(append(r.deltaPrefix, inner...), anyHead...)
	return r
}

// outgoing is one response to send, state of the world or delta.
type outgoing struct {
	delta               bool
	typ, version, nonce string
	res                 []*resource
	removed             []string // delta only
}

// sotw is the response as a message, for a server without the codec.
func (o *outgoing) sotw() *discoverygrpc.DiscoveryResponse {
	resp := &discoverygrpc.DiscoveryResponse{VersionInfo: o.version, TypeUrl: o.typ, Nonce: o.nonce,
		Resources: make([]*anypb.Any, len(o.res))}
	for i, r := range o.res {
		resp.Resources[i] = r.any
	}
	return resp
}

// deltaMsg is the delta response as a message, for a server without the codec.
func (o *outgoing) deltaMsg() *discoverygrpc.DeltaDiscoveryResponse {
	resp := &discoverygrpc.DeltaDiscoveryResponse{SystemVersionInfo: o.version, TypeUrl: o.typ, Nonce: o.nonce,
		RemovedResources: o.removed}
	for _, r := range o.res {
		resp.Resources = append(resp.Resources, r.delta)
	}
	return resp
}

// wireResponse is a response already in its wire form.
type wireResponse struct{ bufs mem.BufferSlice }

// wire assembles the response's encoding from its header and its resources'
// shared bytes.
func (o *outgoing) wire() *wireResponse {
	versionField, typeField, nonceField := protowire.Number(sotwVersion), protowire.Number(sotwTypeURL), protowire.Number(sotwNonce)
	if o.delta {
		versionField, typeField, nonceField = deltaSystemVersion, deltaTypeURL, deltaNonce
	}
	head := make([]byte, 0, 16+len(o.version)+len(o.typ)+len(o.nonce))
	head = protowire.AppendTag(head, versionField, protowire.BytesType)
	head = protowire.AppendString(head, o.version)
	head = protowire.AppendTag(head, typeField, protowire.BytesType)
	head = protowire.AppendString(head, o.typ)
	head = protowire.AppendTag(head, nonceField, protowire.BytesType)
	head = protowire.AppendString(head, o.nonce)
	for _, n := range o.removed {
		head = protowire.AppendTag(head, deltaRemoved, protowire.BytesType)
		head = protowire.AppendString(head, n)
	}
	bufs := make(mem.BufferSlice, 0, 1+2*len(o.res))
	bufs = append(bufs, mem.SliceBuffer(head))
	for _, r := range o.res {
		prefix := r.sotwPrefix
		if o.delta {
			prefix = r.deltaPrefix
		}
		bufs = append(bufs, mem.SliceBuffer(prefix), mem.SliceBuffer(r.any.Value))
	}
	return &wireResponse{bufs: bufs}
}

// codec is gRPC's protobuf codec, except that it hands a wireResponse to the
// transport as it is.
type codec struct{ encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(*wireResponse); ok {
		return w.bufs, nil
	}
	return c.CodecV2.Marshal(v)
}

// GRPCOptions returns the options the gRPC server that Register is given should be
// created with: they let the server send responses without encoding them for each
// proxy. A server created without them works too, encoding every response.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	s.wire = true
	return []grpc.ServerOption{grpc.ForceServerCodecV2(codec{encoding.GetCodecV2(protocodec.Name)})}
}
