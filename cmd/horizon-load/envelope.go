package main

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// A state-of-the-world proxy reads a DiscoveryResponse straight from its encoding
// instead of building the message: the response's version, type URL and nonce (what
// it answers with) and each resource's type URL and encoded value, which alias the
// received bytes until release. The ClusterLoadAssignments among them are then decoded and
// validated as before (decoder, memoized by their bytes); clusters are counted, as
// before. Building the whole message copied every resource of every response into
// an Any of its own — at 10,000 proxies a quarter of this tool's CPU, on the cores
// Horizon runs on — for bytes the memoized decoder then looked up anyway. The
// received bytes are held in a buffer of gRPC's pool, returned once the response is
// answered. What Horizon sends and how the proxy answers are unchanged.

// sotwResponse is what a proxy reads of a DiscoveryResponse.
type sotwResponse struct {
	version, typeURL, nonce string
	resources               []rawAny
	size                    int // of the encoded response
	buf                     mem.Buffer
}

// release returns the bytes the response's values alias: they may not be used after.
func (r *sotwResponse) release() {
	if r.buf != nil {
		r.buf.Free()
	}
	*r = sotwResponse{}
}

// rawAny is a google.protobuf.Any as encoded: its value aliases the response.
type rawAny struct {
	typeURL string
	value   []byte
}

// Field numbers read (envoy.service.discovery.v3.DiscoveryResponse, google.protobuf.Any).
const (
	respVersion, respResources, respTypeURL, respNonce = 1, 2, 4, 5
	anyTypeURL, anyValue                               = 1, 2
)

// parseResponse reads b, a DiscoveryResponse's encoding, into r. Fields the proxy
// does not read are skipped, as are fields in another wire type than theirs (which
// proto.Unmarshal keeps as unknown); a malformed encoding or a string that is not
// UTF-8 is an error, as with proto.Unmarshal.
func parseResponse(b []byte, r *sotwResponse) error {
	*r = sotwResponse{size: len(b), resources: make([]rawAny, 0, countResources(b))}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("decode DiscoveryResponse: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if !(num == respVersion || num == respResources || num == respTypeURL || num == respNonce) || typ != protowire.BytesType {
			// Not read (in another wire type, proto.Unmarshal keeps it as unknown).
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return fmt.Errorf("decode DiscoveryResponse field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fmt.Errorf("decode DiscoveryResponse field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		var err error
		switch num {
		case respVersion:
			r.version, err = utf8String(v, "version_info")
		case respTypeURL:
			r.typeURL, err = utf8String(v, "type_url")
		case respNonce:
			r.nonce, err = utf8String(v, "nonce")
		case respResources:
			var a rawAny
			a, err = parseAny(v)
			r.resources = append(r.resources, a)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// countResources is how many resources the DiscoveryResponse encoded in b holds, or
// a guess if b is malformed (parseResponse then says how).
func countResources(b []byte) int {
	count := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			break
		}
		b = b[n:]
		if num == respResources && typ == protowire.BytesType {
			count++
		}
	}
	return count
}

func parseAny(b []byte) (rawAny, error) {
	var a rawAny
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return a, fmt.Errorf("decode a resource's Any: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num != anyTypeURL && num != anyValue || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return a, fmt.Errorf("decode a resource's Any: %w", protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return a, fmt.Errorf("decode a resource's Any: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == anyValue {
			a.value = v
			continue
		}
		switch string(v) { // the types served: no copy
		case typeCLA:
			a.typeURL = typeCLA
		case typeCluster:
			a.typeURL = typeCluster
		default:
			var err error
			if a.typeURL, err = utf8String(v, "Any.type_url"); err != nil {
				return a, err
			}
		}
	}
	return a, nil
}

func utf8String(b []byte, field string) (string, error) {
	if !utf8.Valid(b) {
		return "", fmt.Errorf("decode DiscoveryResponse: %s is not UTF-8", field)
	}
	return string(b), nil
}

// responseCodec is gRPC's protobuf codec, except that it reads a *sotwResponse with
// parseResponse. The received bytes are kept in one buffer of gRPC's pool (copied
// there if they arrived in several), which the response's values alias until
// release.
type responseCodec struct{ encoding.CodecV2 }

func (c responseCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*sotwResponse); ok {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		if err := parseResponse(buf.ReadOnlyData(), r); err != nil {
			buf.Free()
			return err
		}
		r.buf = buf
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

var sotwCodec = responseCodec{encoding.GetCodecV2(protocodec.Name)}

// sotwClient is a state-of-the-world ADS stream whose responses are read with
// parseResponse.
type sotwClient struct{ grpc.ClientStream }

func (s sotwClient) Send(req *discoveryv3.DiscoveryRequest) error { return s.SendMsg(req) }

func (s sotwClient) Recv(r *sotwResponse) error { return s.RecvMsg(r) }

// openSotw opens a state-of-the-world ADS stream on conn.
func openSotw(ctx context.Context, conn *grpc.ClientConn) (sotwClient, error) {
	desc := &discoveryv3.AggregatedDiscoveryService_ServiceDesc.Streams[0]
	if desc.StreamName != "StreamAggregatedResources" {
		return sotwClient{}, errors.New("the ADS service's first stream is not StreamAggregatedResources")
	}
	s, err := conn.NewStream(ctx, desc, discoveryv3.AggregatedDiscoveryService_StreamAggregatedResources_FullMethodName,
		grpc.ForceCodecV2(sotwCodec))
	if err != nil {
		return sotwClient{}, err
	}
	return sotwClient{s}, nil
}
