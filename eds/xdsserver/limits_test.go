package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// served opens an ADS stream for proxy id and reads its first response: the stream
// is being served. It fails the test if the stream is refused.
func served(t *testing.T, f *xdsFixture, id string) discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	st := sotwStreamFor(t, f)
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node(id), TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("stream of %s: %v", id, err)
	}
	return st
}

// refused opens an ADS stream and returns the error its first request gets.
func refused(t *testing.T, f *xdsFixture) error {
	t.Helper()
	st := sotwStreamFor(t, f)
	// The server may refuse before it reads: then Send fails with io.EOF and Recv
	// has the status.
	_ = st.Send(&discoverygrpc.DiscoveryRequest{Node: node("refused"), TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}})
	_, err := st.Recv()
	return err
}

func wantExhausted(t *testing.T, err error, text string) {
	t.Helper()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), text) {
		t.Fatalf("got %v, want ResourceExhausted saying %q", err, text)
	}
}

// TestStreamLimit: past Limits.MaxStreams over all connections, a stream or a
// Fetch is refused with ResourceExhausted and counted; once a stream ends, a new one
// is served.
func TestStreamLimit(t *testing.T) {
	f := newXDSFixture(t, func(o *Options) { o.Limits.MaxStreams = 3 })
	other := f.otherConnection() // the limit is over every connection
	ctx, cancel := context.WithCancel(t.Context())
	first, err := other.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Send(&discoverygrpc.DiscoveryRequest{Node: node("s0"), TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err != nil {
		t.Fatal(err)
	}
	served(t, f, "s1")
	served(t, f, "s2")
	wantExhausted(t, refused(t, f), "stream limit (3 streams)")
	_, err = f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("f"), ResourceNames: []string{claA}})
	wantExhausted(t, err, "stream limit")
	if got := counterValue(t, f.s.metrics.refused.WithLabelValues(reasonStreams)); got != 2 {
		t.Fatalf("refused streams: %v, want 2", got)
	}
	cancel()
	kubetest.Eventually(t, 10*time.Second, func() error {
		if n := f.s.limits.active.Load(); n != 2 {
			return fmt.Errorf("%d streams served, want 2 after one ended", n)
		}
		return nil
	})
	served(t, f, "s3")
}

// TestNewStreamRate: past the burst of the new-stream bucket, a stream or Fetch
// that would wait longer than NewStreamWait for a token is refused with
// ResourceExhausted and counted.
func TestNewStreamRate(t *testing.T) {
	f := newXDSFixture(t, func(o *Options) {
		o.Limits.NewStreamRate = 0.001 // no token comes back during the test
		o.Limits.NewStreamBurst = 2
		o.Limits.NewStreamWait = 10 * time.Millisecond
	})
	served(t, f, "r1")
	served(t, f, "r2")
	wantExhausted(t, refused(t, f), "faster than 0.001 a second")
	_, err := f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("f"), ResourceNames: []string{claA}})
	wantExhausted(t, err, "faster than")
	if got := counterValue(t, f.s.metrics.refused.WithLabelValues(reasonStreamRate)); got != 2 {
		t.Fatalf("refused stream_rate: %v, want 2", got)
	}
	if n := f.s.limits.active.Load(); n != 2 {
		t.Fatalf("%d streams counted as served, want 2: a refused one is not", n)
	}
}

// TestRequestRate: a stream's ACKs of the responses it is sent never wait for its
// request bucket, however many pushes there are; requests that change what it
// subscribes to past the bucket's burst are read no faster than its rate.
func TestRequestRate(t *testing.T) {
	f := newXDSFixture(t, func(o *Options) {
		o.Limits.RequestRate = 0.001 // no token comes back during the test
		o.Limits.RequestBurst = 3
	})
	// No deadline: a stream with one is ended rather than made to wait past it.
	st := f.deltaStream(t.Context())
	ack := func() *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("q1"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	ack()
	for i := range 20 { // 20 pushes, far past the burst: every ACK is taken
		f.change(hostA, "10.0.0.1", fmt.Sprintf("10.0.2.%d", i))
		ack()
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		for _, p := range f.s.Streams() {
			if p.UpToDate {
				return nil
			}
		}
		return errors.New("the last ACK was not taken")
	})
	if got := counterValue(t, f.s.metrics.throttled); got != 0 {
		t.Fatalf("%v requests throttled, want none: ACKs take no token", got)
	}
	// Requests that subscribe (no nonce): two tokens are left, the third waits.
	for i := range 5 {
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{fmt.Sprintf("made-up-%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		if got := counterValue(t, f.s.metrics.throttled); got != 1 {
			return fmt.Errorf("%v requests throttled, want 1 (the third, waiting)", got)
		}
		return nil
	})
	kubetest.Eventually(t, 10*time.Second, func() error {
		have, _ := f.s.streamFor("q1")
		if _, ok := have["made-up-1"]; !ok {
			return errors.New("the second subscription is not taken yet")
		}
		return nil
	})
	if have, _ := f.s.streamFor("q1"); len(have) != 3 {
		t.Fatalf("subscribed to %d names, want 3 (A and the two requests within the burst)", len(have))
	}
}

// TestRequestsGRPCRefuses: a request over the server's message size limit, on a
// stream or a Fetch, and one that does not decode, are refused by gRPC and counted
// in horizon_xds_refused_requests_total.
func TestRequestsGRPCRefuses(t *testing.T) {
	f := newXDSFixtureGRPC(t, []grpc.ServerOption{grpc.MaxRecvMsgSize(1024)})
	big := madeUpNames(200)
	st := sotwStreamFor(t, f)
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node("m1"), TypeUrl: resourcev3.EndpointType, ResourceNames: big}); err != nil {
		t.Fatal(err)
	}
	_, err := st.Recv()
	wantExhausted(t, err, "larger than max")
	_, err = f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("m2"), ResourceNames: big})
	wantExhausted(t, err, "larger than max")
	// Field 1 of a DiscoveryRequest is a string: invalid UTF-8 does not decode.
	err = f.conn.Invoke(t.Context(), "/envoy.service.endpoint.v3.EndpointDiscoveryService/FetchEndpoints",
		wrapperspb.Bytes([]byte{0xff, 0xfe}), &discoverygrpc.DiscoveryResponse{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("undecodable Fetch: %v, want Internal", err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		size := counterValue(t, f.s.metrics.refused.WithLabelValues(reasonMessageSize))
		malformed := counterValue(t, f.s.metrics.refused.WithLabelValues(reasonMalformed))
		if size != 2 || malformed != 1 {
			return fmt.Errorf("refused message_size %v, malformed %v; want 2 and 1", size, malformed)
		}
		return nil
	})
}
