package xdsserver

import (
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// Responses without encoding. A resource is encoded once, when it is built,
// before it reaches a snapshot; with the codec below, a response is handed
// to gRPC's transport as a list of byte slices — a few header bytes of its own,
// then each resource's shared bytes (state of the world: one buffer per resource,
// already inside its Any; a response with the whole type: one buffer for all) —
// instead of being encoded, copied, into a buffer of its own for every proxy. Serving a fleet then allocates next to nothing
// per response, which keeps the heap's peak, and so the process's memory, low.

// Field numbers of the messages assembled here (envoy/service/discovery/v3).
const (
	anyTypeURL, anyValue = 1, 2

	sotwVersion, sotwResources, sotwTypeURL, sotwNonce = 1, 2, 4, 5

	deltaSystemVersion, deltaResources, deltaTypeURL, deltaNonce, deltaRemoved = 1, 2, 4, 5, 6

	resVersion, resResource, resName = 1, 2, 3
)

// wirePrefixes returns what puts a resource's encoding, of n bytes, in a state of
// the world response (prefixes[:sotw]) and in a delta response (prefixes[sotw:]),
// in one allocation.
func wirePrefixes(typeURL, name, version string, n int) (prefixes []byte, sotw int) {
	// Any{type_url, value} up to value's bytes.
	anyHeadLen := 1 + protowire.SizeBytes(len(typeURL)) + 1 + protowire.SizeVarint(uint64(n))
	anyLen := anyHeadLen + n
	appendAnyHead := func(b []byte) []byte {
		b = protowire.AppendTag(b, anyTypeURL, protowire.BytesType)
		b = protowire.AppendString(b, typeURL)
		b = protowire.AppendTag(b, anyValue, protowire.BytesType)
		return protowire.AppendVarint(b, uint64(n))
	}
	// DeltaDiscoveryResponse.resources: Resource{version, name, resource: Any}.
	innerLen := 1 + protowire.SizeBytes(len(version)) + 1 + protowire.SizeBytes(len(name)) + 1 + protowire.SizeVarint(uint64(anyLen))
	sotwLen := 1 + protowire.SizeVarint(uint64(anyLen)) + anyHeadLen
	deltaLen := 1 + protowire.SizeVarint(uint64(innerLen+anyLen)) + innerLen + anyHeadLen

	b := make([]byte, 0, sotwLen+deltaLen)
	// DiscoveryResponse.resources: one Any.
	b = protowire.AppendTag(b, sotwResources, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anyLen))
	b = appendAnyHead(b)
	sotw = len(b)
	b = protowire.AppendTag(b, deltaResources, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(innerLen+anyLen))
	b = protowire.AppendTag(b, resVersion, protowire.BytesType)
	b = protowire.AppendString(b, version)
	b = protowire.AppendTag(b, resName, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, resResource, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anyLen))
	b = appendAnyHead(b)
	return b, sotw
}

// outgoing is one response to send, state of the world or delta.
type outgoing struct {
	delta               bool
	typ, version, nonce string
	res                 []*Resource
	// all: res is every resource of all, in its order (state of the world).
	all     *Resources
	removed []string // delta only
}

// sotw is the response as a message, for a server without the codec.
func (o *outgoing) sotw() *discoverygrpc.DiscoveryResponse {
	resp := &discoverygrpc.DiscoveryResponse{VersionInfo: o.version, TypeUrl: o.typ, Nonce: o.nonce,
		Resources: make([]*anypb.Any, len(o.res))}
	for i, r := range o.res {
		resp.Resources[i] = r.Any()
	}
	return resp
}

// deltaMsg is the delta response as a message, for a server without the codec.
func (o *outgoing) deltaMsg() *discoverygrpc.DeltaDiscoveryResponse {
	resp := &discoverygrpc.DeltaDiscoveryResponse{SystemVersionInfo: o.version, TypeUrl: o.typ, Nonce: o.nonce,
		RemovedResources: o.removed}
	for _, r := range o.res {
		resp.Resources = append(resp.Resources, &discoverygrpc.Resource{Name: r.name, Version: r.version, Resource: r.Any()})
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
	switch {
	case o.delta:
		bufs := make(mem.BufferSlice, 0, 1+2*len(o.res))
		bufs = append(bufs, mem.SliceBuffer(head))
		for _, r := range o.res {
			bufs = append(bufs, mem.SliceBuffer(r.delta), mem.SliceBuffer(r.b))
		}
		return &wireResponse{bufs: bufs}
	case o.all != nil && len(o.res) > 0:
		return &wireResponse{bufs: mem.BufferSlice{mem.SliceBuffer(head), o.all.sotwAll()}}
	}
	bufs := make(mem.BufferSlice, 0, 1+len(o.res))
	bufs = append(bufs, mem.SliceBuffer(head))
	for _, r := range o.res {
		bufs = append(bufs, r.sotw)
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
