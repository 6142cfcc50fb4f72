package eds

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// backend is a gRPC server that answers every call with its name.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
	port uint32
}

func (b *backend) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{ServerId: b.name}, nil
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, port: uint32(lis.Addr().(*net.TCPAddr).Port)}
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, b)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return b
}

// setBackends makes host's port 80 the given backends.
func (f *fakeSource) setBackends(host string, bs ...*backend) {
	sh := &clusterregistry.Shard{
		Service:   clusterregistry.Service{Host: host, Name: "web", Namespace: "ns", Cluster: "c1", Ports: []clusterregistry.ServicePort{{Name: "grpc", Port: 80}}},
		Endpoints: map[int32][]clusterregistry.Endpoint{},
	}
	for _, b := range bs {
		sh.Endpoints[80] = append(sh.Endpoints[80], clusterregistry.Endpoint{Address: "127.0.0.1", Port: b.port, Ready: true, Cluster: "c1"})
	}
	f.setShard(host, "c1", sh)
}

// TestGRPCClientFollowsChanges: grpc-go's own xDS client, dialing xds:/// through
// Horizon, follows an endpoint change of the service it calls (the push that
// carries it holds only what changed), while a client of another service, on the
// same Server, keeps calling its backend.
func TestGRPCClientFollowsChanges(t *testing.T) {
	a1, a2, b1 := startBackend(t, "a1"), startBackend(t, "a2"), startBackend(t, "b1")
	src := &fakeSource{shards: map[string]map[network.ClusterID]*clusterregistry.Shard{}}
	src.setBackends(hostA, a1)
	src.setBackends(hostB, b1)
	s := newTestServer(t, src, func(o *Options) { o.ProxylessMTLS = false })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(s.GRPCOptions()...)
	s.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)

	bootstrap, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      lis.Addr().String(),
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": "sidecar~127.0.0.1~client.ns~ns.svc.cluster.local", "metadata": map[string]any{"GENERATOR": "grpc"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	dial := func(host string) testgrpc.TestServiceClient {
		t.Helper()
		r, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient("xds:///"+GRPCTarget(host, 80), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(r))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return testgrpc.NewTestServiceClient(conn)
	}
	// reaches waits until every call of a few reaches the named backend.
	reaches := func(t *testing.T, c testgrpc.TestServiceClient, want string) {
		t.Helper()
		kubetest.Eventually(t, 20*time.Second, func() error {
			for i := range 5 {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.WaitForReady(true))
				cancel()
				if err != nil {
					return fmt.Errorf("call %d: %w", i, err)
				}
				if got := resp.GetServerId(); got != want {
					return fmt.Errorf("call %d reached %s, want %s", i, got, want)
				}
			}
			return nil
		})
	}
	clientA, clientB := dial(hostA), dial(hostB)
	reaches(t, clientA, "a1")
	reaches(t, clientB, "b1")

	for i, want := range []*backend{a2, a1, a2} {
		src.setBackends(hostA, want)
		s.HostChanged(hostA)
		s.push(time.Now())
		t.Run("change "+strconv.Itoa(i+1), func(t *testing.T) {
			reaches(t, clientA, want.name)
			reaches(t, clientB, "b1")
		})
	}
}
