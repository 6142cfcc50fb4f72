package main

import (
	"bytes"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestParseResponse: what a state-of-the-world proxy reads of a response from its
// encoding is what the decoded message says, fields it does not read are skipped,
// as are fields in another wire type than theirs, and a malformed encoding is an
// error, as proto.Unmarshal would say.
func TestParseResponse(t *testing.T) {
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: "v1", TypeUrl: typeCLA, Nonce: "7", Canary: true,
		ControlPlane: &corev3.ControlPlane{Identifier: "horizon"},
		Resources: []*anypb.Any{
			{TypeUrl: typeCLA, Value: []byte("first")},
			{TypeUrl: typeCluster, Value: []byte{}},
			{TypeUrl: typeCLA, Value: []byte("third")},
		},
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	// The nonce again, as a varint: proto.Unmarshal keeps it as an unknown field.
	b = append(b, respNonce<<3|0, 1)
	var got sotwResponse
	if err := parseResponse(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.version != "v1" || got.typeURL != typeCLA || got.nonce != "7" || got.size != len(b) || len(got.resources) != 3 {
		t.Fatalf("parsed %+v", got)
	}
	for i, a := range got.resources {
		if a.typeURL != resp.Resources[i].TypeUrl || !bytes.Equal(a.value, resp.Resources[i].Value) {
			t.Errorf("resource %d: parsed %q %q, want %q %q", i, a.typeURL, a.value, resp.Resources[i].TypeUrl, resp.Resources[i].Value)
		}
	}

	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"truncated", b[:len(b)-4], "decode"},
		{"a field's length past the end", []byte{respNonce<<3 | 2, 9, 'x'}, "field 5"},
		{"version not UTF-8", []byte{respVersion<<3 | 2, 1, 0xff}, "not UTF-8"},
		{"Any truncated", []byte{respResources<<3 | 2, 2, anyValue<<3 | 2, 5}, "Any"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if proto.Unmarshal(tc.b, &discoveryv3.DiscoveryResponse{}) == nil {
				t.Fatal("proto.Unmarshal accepts it: not a malformed response")
			}
			err := parseResponse(tc.b, &sotwResponse{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseResponse: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
