package eds

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// pingCounter is a listener whose connections count the HTTP/2 PING frames the
// server writes on its own (not the ACKs of the client's PINGs).
type pingCounter struct {
	net.Listener
	mu    sync.Mutex
	pings int
}

func (l *pingCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &framesOut{Conn: c, l: l}, nil
}

func (l *pingCounter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pings
}

// framesOut splits what the server writes into HTTP/2 frames (9-byte header:
// length, type, flags, stream).
type framesOut struct {
	net.Conn
	l   *pingCounter
	buf []byte
}

func (c *framesOut) Write(b []byte) (int, error) {
	c.buf = append(c.buf, b...)
	for len(c.buf) >= 9 {
		n := 9 + (int(c.buf[0])<<16 | int(c.buf[1])<<8 | int(c.buf[2]))
		if len(c.buf) < n {
			break
		}
		const framePing, flagAck = 0x6, 0x1
		if c.buf[3] == framePing && c.buf[4]&flagAck == 0 {
			c.l.mu.Lock()
			c.l.pings++
			c.l.mu.Unlock()
		}
		c.buf = c.buf[n:]
	}
	return c.Conn.Write(b)
}

// TestNoBandwidthPingsPerPush: with GRPCOptions the server answers pushes and
// their ACKs without sending a PING of its own after each request it reads (gRPC's
// bandwidth estimation with dynamic flow-control windows), which costs a write
// and a read per proxy and push.
func TestNoBandwidthPingsPerPush(t *testing.T) {
	src := &fakeSource{shards: map[string]map[network.ClusterID]*clusterregistry.Shard{}}
	src.set(hostA, "10.0.0.1")
	s := newTestServer(t, src)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &pingCounter{Listener: inner}
	g := grpc.NewServer(s.GRPCOptions()...)
	s.Register(g)
	go g.Serve(lis)
	// A client with static windows sends no PINGs either: every PING counted is
	// the server's.
	conn, err := grpc.NewClient(inner.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		g.Stop()
	})
	f := &xdsFixture{t: t, src: src, s: s, ads: discoverygrpc.NewAggregatedDiscoveryServiceClient(conn)}
	st := sotwStreamFor(t, f)
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node("p1"), TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	ips := []string{"10.0.0.1"}
	for i := range 6 {
		resp, clas := recvSotw(t, st)
		if got := addresses(clas[claA]); len(got) != len(ips) {
			t.Fatalf("response %d holds %v of A, want %v", i, got, ips)
		}
		if err := st.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA},
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		// A PING the ACK causes is queued when the ACK is read, before the
		// response to the next change: it has been written once that is read.
		kubetest.Eventually(t, 10*time.Second, func() error {
			if ps := s.xds.Streams(); len(ps) != 1 || !ps[0].UpToDate {
				return errors.New("not yet: the ACK to be taken")
			}
			return nil
		})
		ips = append(ips, fmt.Sprintf("10.0.0.%d", len(ips)+1))
		f.change(hostA, ips...)
	}
	recvSotw(t, st)
	if n := lis.count(); n != 0 {
		t.Errorf("the server sent %d PINGs over 7 responses and their ACKs, want 0", n)
	}
}
