package xdsserver

import (
	"fmt"
	"strings"
	"testing"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
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

// TestRequestWithoutNode: a stream whose first request has no node, and a Fetch
// without one, are refused with InvalidArgument and counted; they are not served
// every resource.
func TestRequestWithoutNode(t *testing.T) {
	f := newXDSFixture(t)
	want := func(t *testing.T, err error) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "no node") {
			t.Fatalf("got %v, want InvalidArgument saying the request has no node", err)
		}
	}
	t.Run("sotw", func(t *testing.T) {
		st := sotwStreamFor(t, f)
		if err := st.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.ClusterType}); err != nil {
			t.Fatal(err)
		}
		_, err := st.Recv()
		want(t, err)
	})
	t.Run("delta", func(t *testing.T) {
		st := f.deltaStream(t.Context())
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
		_, err := st.Recv()
		want(t, err)
	})
	t.Run("fetch", func(t *testing.T) {
		_, err := f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{})
		want(t, err)
	})
	if got := counterValue(t, f.s.metrics.refused.WithLabelValues(reasonNoNode)); got != 3 {
		t.Fatalf("refused no_node: %v, want 3", got)
	}
}

// TestEndpointsWithoutNames: EDS is not a wildcard type: a request naming no
// endpoints is answered with none, on a stream and by Fetch, while clusters with
// no names are all of them.
func TestEndpointsWithoutNames(t *testing.T) {
	f := newXDSFixture(t)
	t.Run("sotw", func(t *testing.T) {
		st := sotwStreamFor(t, f)
		if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node("e1"), TypeUrl: resourcev3.EndpointType}); err != nil {
			t.Fatal(err)
		}
		if resp, _ := recvSotw(t, st); len(resp.GetResources()) != 0 {
			t.Fatalf("EDS with no names: %d resources, want none", len(resp.GetResources()))
		}
	})
	t.Run("delta", func(t *testing.T) {
		st := f.deltaStream(t.Context())
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("e2"), TypeUrl: resourcev3.EndpointType}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResources()) != 0 {
			t.Fatalf("delta EDS with no names: %d resources, want none", len(resp.GetResources()))
		}
	})
	t.Run("fetch", func(t *testing.T) {
		resp, err := f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("e3")})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResources()) != 0 {
			t.Fatalf("Fetch of endpoints with no names: %d resources, want none", len(resp.GetResources()))
		}
		cds := clusterservice.NewClusterDiscoveryServiceClient(f.conn)
		resp, err = cds.FetchClusters(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("e3")})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResources()) != 2 {
			t.Fatalf("Fetch of clusters with no names: %d resources, want both", len(resp.GetResources()))
		}
	})
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
