package xdsserver

import (
	"fmt"
	"testing"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func madeUpNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("made-up-%d", i)
	}
	return out
}

// TestNamesPerStreamAreBounded: a stream that subscribes to more names than
// MaxNames, at once or bit by bit, state of the world or delta, is ended with
// ResourceExhausted; up to the bound it is served.
func TestNamesPerStreamAreBounded(t *testing.T) {
	const maxNames = 1000
	f := newXDSFixture(t, func(o *Options) { o.MaxNames = maxNames })
	t.Run("sotw at once", func(t *testing.T) {
		st := sotwStreamFor(t, f)
		if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node("p1"), TypeUrl: resourcev3.EndpointType, ResourceNames: madeUpNames(maxNames + 1)}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("got %v, want ResourceExhausted", err)
		}
	})
	t.Run("sotw replacing its names is not adding", func(t *testing.T) {
		st := sotwStreamFor(t, f)
		// Each request names maxNames, replacing the last's; each is answered.
		nonce := ""
		for i, extra := range []string{claA, claB} {
			names := append(madeUpNames(maxNames-1), extra)
			if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node("p2"), TypeUrl: resourcev3.EndpointType, ResourceNames: names, ResponseNonce: nonce}); err != nil {
				t.Fatal(err)
			}
			resp, err := st.Recv()
			if err != nil {
				t.Fatalf("request %d, within the bound: %v", i, err)
			}
			nonce = resp.GetNonce()
		}
	})
	t.Run("delta bit by bit", func(t *testing.T) {
		st := f.deltaStream(t.Context())
		names := madeUpNames(maxNames + 100)
		var err error
		for i := 0; i < len(names) && err == nil; i += 100 {
			err = st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("p3"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: names[i : i+100]})
		}
		for err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("got %v, want ResourceExhausted", err)
		}
	})
	t.Run("type URLs", func(t *testing.T) {
		st := sotwStreamFor(t, f)
		var err error
		for i := 0; i <= maxTypesPerStream && err == nil; i++ {
			err = st.Send(&discoverygrpc.DiscoveryRequest{Node: node("p4"), TypeUrl: fmt.Sprintf("type.googleapis.com/made.up.T%d", i)})
		}
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("got %v, want ResourceExhausted", err)
		}
	})
}
