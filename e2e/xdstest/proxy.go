// Package xdstest drives Horizon's xDS server the way proxies do, for tests: ADS
// streams (state of the world or delta) that subscribe, ACK every response, keep the
// latest resources, and check each one with Envoy's proto validation.
package xdstest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Type URLs of the resources a Proxy handles.
const (
	TypeCLA      = typeCLA
	TypeCluster  = typeCluster
	TypeListener = typeListener
)

const (
	typeCLA      = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
)

// Options says how a Proxy connects.
type Options struct {
	// Delta uses the incremental protocol instead of state of the world.
	Delta bool
	// CDS also subscribes to every cluster.
	CDS bool
	// LDS also subscribes to every listener.
	LDS bool
	// EDS names the ClusterLoadAssignments to subscribe to.
	EDS []string
	// Plain uses a plain EDS stream (EndpointDiscoveryService) instead of ADS; CDS
	// and Delta are then ignored.
	Plain bool
}

// Proxy is a proxy's ADS stream as Envoy drives it: it subscribes, ACKs every
// response, and keeps the latest version of each resource. Every resource received
// is checked with Envoy's own proto validation; an invalid one fails the test.
type Proxy struct {
	t     *testing.T
	delta bool
	node  *corev3.Node

	mu        sync.Mutex
	resources map[string]map[string]proto.Message // type → name → resource
	received  map[string]int                      // type URL + " " + name → times received
	responses int
	byType    map[string]int // responses per type URL
	invalid   []string
}

// NodeWithMetadata returns a node with the given ID and metadata.
func NodeWithMetadata(id string, md map[string]any) *corev3.Node {
	s, err := structpb.NewStruct(md)
	if err != nil {
		panic(err)
	}
	return &corev3.Node{Id: id, Cluster: "test", Metadata: s}
}

// Node returns a node with the given ID and NETWORK metadata (none if empty).
func Node(id, network string) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{"NETWORK": network})
	if network == "" {
		md = nil
	}
	return &corev3.Node{Id: id, Cluster: "test", Metadata: md}
}

// Connect opens an ADS stream to addr as node and subscribes as opts says. The
// stream ends, and invalid resources fail the test, when the test ends.
func Connect(t *testing.T, addr string, node *corev3.Node, opts Options) *Proxy {
	delta, withCDS, names := opts.Delta, opts.CDS, opts.EDS
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{t: t, delta: delta, node: node, resources: map[string]map[string]proto.Message{}, received: map[string]int{}, byType: map[string]int{}}
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		conn.Close()
		<-done
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.invalid {
			t.Errorf("proxy %s received an invalid resource: %s", node.Id, e)
		}
	})
	if delta && !opts.Plain {
		stream, err := client.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		send := func(typ string, subscribe []string) {
			if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typ, ResourceNamesSubscribe: subscribe}); err != nil {
				t.Errorf("send: %v", err)
			}
		}
		if withCDS {
			send(typeCluster, nil)
		}
		if opts.LDS {
			send(typeListener, nil)
		}
		send(typeCLA, names)
		go func() {
			defer close(done)
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				p.mu.Lock()
				p.responses++
				p.byType[resp.GetTypeUrl()]++
				for _, r := range resp.GetResources() {
					p.store(resp.GetTypeUrl(), r.GetName(), r.GetResource())
				}
				for _, name := range resp.GetRemovedResources() {
					delete(p.resources[resp.GetTypeUrl()], name)
				}
				p.mu.Unlock()
				_ = stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
			}
		}()
		return p
	}
	var stream interface {
		Send(*discoveryv3.DiscoveryRequest) error
		Recv() (*discoveryv3.DiscoveryResponse, error)
	}
	if opts.Plain {
		withCDS = false
		stream, err = endpointservice.NewEndpointDiscoveryServiceClient(conn).StreamEndpoints(ctx)
	} else {
		stream, err = client.StreamAggregatedResources(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	sendReq := func(typ string, names []string, version, nonce string) {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names, VersionInfo: version, ResponseNonce: nonce}); err != nil {
			t.Errorf("send: %v", err)
		}
	}
	if withCDS {
		sendReq(typeCluster, nil, "", "")
	}
	if opts.LDS && !opts.Plain {
		sendReq(typeListener, nil, "", "")
	}
	sendReq(typeCLA, names, "", "")
	subscribed := map[string][]string{typeCLA: names}
	go func() {
		defer close(done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.responses++
			p.byType[resp.GetTypeUrl()]++
			if resp.GetTypeUrl() != typeCLA {
				p.resources[resp.GetTypeUrl()] = nil // state of the world: the full set
			}
			for _, r := range resp.GetResources() {
				p.store(resp.GetTypeUrl(), "", r)
			}
			p.mu.Unlock()
			sendReq(resp.GetTypeUrl(), subscribed[resp.GetTypeUrl()], resp.GetVersionInfo(), resp.GetNonce())
		}
	}()
	return p
}

// store decodes, validates and keeps one resource. Called with p.mu held.
func (p *Proxy) store(typ, name string, a *anypb.Any) {
	var m interface {
		proto.Message
		ValidateAll() error
	}
	switch typ {
	case typeCLA:
		m = &endpointv3.ClusterLoadAssignment{}
	case typeCluster:
		m = &clusterv3.Cluster{}
	case typeListener:
		m = &listenerv3.Listener{}
	default:
		p.invalid = append(p.invalid, "unexpected type "+typ)
		return
	}
	if err := a.UnmarshalTo(m); err != nil {
		p.invalid = append(p.invalid, fmt.Sprintf("%s: %v", typ, err))
		return
	}
	if err := m.ValidateAll(); err != nil {
		p.invalid = append(p.invalid, fmt.Sprintf("%s %s: %v", typ, name, err))
	}
	if name == "" {
		switch r := m.(type) {
		case *endpointv3.ClusterLoadAssignment:
			name = r.GetClusterName()
		case *clusterv3.Cluster:
			name = r.GetName()
		case *listenerv3.Listener:
			name = r.GetName()
		}
	}
	if p.resources[typ] == nil {
		p.resources[typ] = map[string]proto.Message{}
	}
	p.received[typ+" "+name]++
	p.resources[typ][name] = m
}

// CLA returns the latest ClusterLoadAssignment named name, or nil.
func (p *Proxy) CLA(name string) *endpointv3.ClusterLoadAssignment {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, _ := p.resources[typeCLA][name].(*endpointv3.ClusterLoadAssignment)
	return m
}

// Cluster returns the latest Cluster named name, or nil.
func (p *Proxy) Cluster(name string) *clusterv3.Cluster {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, _ := p.resources[typeCluster][name].(*clusterv3.Cluster)
	return m
}

// Listener returns the latest Listener named name, or nil.
func (p *Proxy) Listener(name string) *listenerv3.Listener {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, _ := p.resources[typeListener][name].(*listenerv3.Listener)
	return m
}

// Names returns the names of the resources of one type URL held now, sorted.
func (p *Proxy) Names(typeURL string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.resources[typeURL]))
}

// Received counts how many times the resource of type typeURL named name was
// received.
func (p *Proxy) Received(typeURL, name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received[typeURL+" "+name]
}

// ResponsesFor counts the responses received for one type URL.
func (p *Proxy) ResponsesFor(typeURL string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byType[typeURL]
}

// Responses counts the responses received.
func (p *Proxy) Responses() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.responses
}

// Summary renders a ClusterLoadAssignment one line per locality:
// "region/zone/subzone(weight): address:port*weight[+mtls] …".
func Summary(cla *endpointv3.ClusterLoadAssignment) []string {
	return summary(cla, false)
}

// PrioritySummary is Summary with each locality's EDS priority in front:
// "p1 region/zone/subzone(weight): …".
func PrioritySummary(cla *endpointv3.ClusterLoadAssignment) []string {
	return summary(cla, true)
}

func summary(cla *endpointv3.ClusterLoadAssignment, priority bool) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		loc := l.GetLocality()
		var eps []string
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			s := fmt.Sprintf("%s:%d*%d", sa.GetAddress(), sa.GetPortValue(), e.GetLoadBalancingWeight().GetValue())
			if e.GetMetadata() != nil {
				s += "+mtls"
			}
			eps = append(eps, s)
		}
		line := fmt.Sprintf("%s/%s/%s(%d): %s", loc.GetRegion(), loc.GetZone(), loc.GetSubZone(),
			l.GetLoadBalancingWeight().GetValue(), strings.Join(eps, " "))
		if priority {
			line = fmt.Sprintf("p%d %s", l.GetPriority(), line)
		}
		out = append(out, line)
	}
	return out
}
