package eds

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/horizon-mesh/horizon/network"
)

// TypeSync is what one proxy was sent and acknowledged of one resource type.
type TypeSync struct {
	Sent       string    `json:"sent,omitempty"`
	Acked      string    `json:"acked,omitempty"`
	LastNack   string    `json:"lastNack,omitempty"`
	LastNackAt time.Time `json:"lastNackAt,omitempty"`
	Nacks      int       `json:"nacks,omitempty"`
}

// ProxyStatus describes one connected xDS stream.
type ProxyStatus struct {
	ID        string            `json:"id"`
	Group     string            `json:"group"`
	Role      Role              `json:"role"`
	Network   network.NetworkID `json:"network,omitempty"`
	Stream    string            `json:"stream"` // ads, ads-delta, eds, cds, lds, rds
	Connected time.Time         `json:"connected"`
	// Types by type URL.
	Types map[string]*TypeSync `json:"types"`
	// UpToDate: every type the proxy was sent is acknowledged at the group's current
	// version.
	UpToDate bool `json:"upToDate"`
}

// stream is the tracking state of one xDS stream.
type stream struct {
	ProxyStatus
	counted bool              // counted in the connections gauge
	nonces  map[string]string // delta: response nonce → version sent
}

// tracker follows every stream through the server's callbacks. Guarded by mu.
type tracker struct {
	s       *Server
	mu      sync.Mutex
	streams map[int64]*stream
}

func streamKind(typeURL string, delta bool) string {
	if typeURL == resourcev3.AnyType || typeURL == "" {
		if delta {
			return "ads-delta"
		}
		return "ads"
	}
	switch typeURL {
	case resourcev3.EndpointType:
		return "eds"
	case resourcev3.ClusterType:
		return "cds"
	case resourcev3.ListenerType:
		return "lds"
	case resourcev3.RouteType:
		return "rds"
	}
	return "other"
}

func (t *tracker) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, typeURL string) error {
			t.open(id, streamKind(typeURL, false))
			return nil
		},
		DeltaStreamOpenFunc: func(_ context.Context, id int64, typeURL string) error {
			t.open(id, streamKind(typeURL, true))
			return nil
		},
		StreamClosedFunc:      func(id int64, _ *corev3.Node) { t.close(id) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { t.close(id) },
		StreamRequestFunc: func(id int64, req *discoverygrpc.DiscoveryRequest) error {
			t.s.ensureGroup(req.GetNode())
			t.request(id, req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), false)
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoverygrpc.DeltaDiscoveryRequest) error {
			t.s.ensureGroup(req.GetNode())
			t.request(id, req.GetNode(), req.GetTypeUrl(), "", req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), true)
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, req *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
			t.response(id, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce(), req.GetVersionInfo() != "")
		},
		StreamDeltaResponseFunc: func(id int64, req *discoverygrpc.DeltaDiscoveryRequest, resp *discoverygrpc.DeltaDiscoveryResponse) {
			t.response(id, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce(), req.GetResponseNonce() != "")
		},
	}
}

func (t *tracker) open(id int64, kind string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[id] = &stream{
		ProxyStatus: ProxyStatus{Stream: kind, Connected: time.Now(), Types: map[string]*TypeSync{}},
		nonces:      map[string]string{},
	}
}

func (t *tracker) close(id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.streams[id]; st != nil && st.counted {
		t.s.metrics.connections.WithLabelValues(st.Stream, string(st.Network)).Dec()
	}
	delete(t.streams, id)
}

func (t *tracker) request(id int64, node *corev3.Node, typeURL, version, nonce, nack string, delta bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[id]
	if st == nil {
		return
	}
	if node != nil && st.ID == "" {
		v := ViewOf(node)
		st.ID, st.Group, st.Role, st.Network = node.GetId(), v.Key(), v.Role, v.Network
		t.s.metrics.connections.WithLabelValues(st.Stream, string(st.Network)).Inc()
		st.counted = true
	}
	if typeURL == "" {
		return
	}
	ts := st.Types[typeURL]
	if ts == nil {
		ts = &TypeSync{}
		st.Types[typeURL] = ts
	}
	if nack != "" {
		ts.LastNack, ts.LastNackAt = nack, time.Now()
		ts.Nacks++
		t.s.metrics.nacks.WithLabelValues(typeURL).Inc()
		t.s.log.Warn("proxy rejected a response", "proxy", st.ID, "typeUrl", typeURL, "error", nack)
		return
	}
	if delta {
		if v, ok := st.nonces[nonce]; ok {
			ts.Acked = v
			delete(st.nonces, nonce)
		}
	} else if version != "" {
		ts.Acked = version
	}
}

func (t *tracker) response(id int64, typeURL, version, nonce string, triggered bool) {
	if triggered {
		if at := t.s.lastChange.Load(); at != 0 {
			t.s.metrics.pushLatency.Observe(time.Since(time.Unix(0, at)).Seconds())
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[id]
	if st == nil {
		return
	}
	ts := st.Types[typeURL]
	if ts == nil {
		ts = &TypeSync{}
		st.Types[typeURL] = ts
	}
	ts.Sent = version
	if nonce != "" {
		st.nonces[nonce] = version
	}
}

// Proxies describes every connected stream, sorted by proxy ID.
func (s *Server) Proxies() []ProxyStatus {
	s.pushMu.Lock()
	current := map[string]map[string]string{} // group → type → version
	for key, g := range s.groups {
		current[key] = map[string]string{}
		for typ, st := range g.sent {
			current[key][typ] = fmt.Sprint(st.version)
		}
	}
	s.pushMu.Unlock()

	s.tracker.mu.Lock()
	out := make([]ProxyStatus, 0, len(s.tracker.streams))
	for _, st := range s.tracker.streams {
		p := st.ProxyStatus
		p.Types = map[string]*TypeSync{}
		p.UpToDate = true
		for typ, ts := range st.Types {
			c := *ts
			p.Types[typ] = &c
			if c.Sent != "" && c.Acked != current[p.Group][typ] {
				p.UpToDate = false
			}
		}
		out = append(out, p)
	}
	s.tracker.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].ID != out[j].ID {
			return out[i].ID < out[j].ID
		}
		return out[i].Connected.Before(out[j].Connected)
	})
	return out
}

// ConfigDump returns what the group of proxy id holds now — what that proxy was
// sent — as JSON resources by type URL. ok is false if no such proxy is connected.
func (s *Server) ConfigDump(id string) (map[string][]json.RawMessage, bool, error) {
	group := ""
	s.tracker.mu.Lock()
	for _, st := range s.tracker.streams {
		if st.ID == id {
			group = st.Group
			break
		}
	}
	s.tracker.mu.Unlock()
	if group == "" {
		return nil, false, nil
	}
	snap, err := s.cache.GetSnapshot(group)
	if err != nil {
		return nil, true, err
	}
	out := map[string][]json.RawMessage{}
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
		res := snap.GetResources(typ)
		for _, name := range slices.Sorted(maps.Keys(res)) {
			r, err := decode(res[name])
			if err != nil {
				return nil, true, err
			}
			b, err := protojson.Marshal(r)
			if err != nil {
				return nil, true, err
			}
			out[typ] = append(out[typ], b)
		}
	}
	return out, true, nil
}

// EndpointView builds what a sidecar on each network (and with no network) is sent
// for host:port, summarized as "address:port weight W locality R/Z/S" lines.
func (s *Server) EndpointView(host string, port int32, networks []network.NetworkID) map[string][]string {
	s.pushMu.Lock()
	topo := s.topo
	s.pushMu.Unlock()
	if topo == nil {
		return nil
	}
	shards := s.opts.Source.Services(host)
	out := map[string][]string{}
	for _, n := range append([]network.NetworkID{""}, networks...) {
		input := endpointsOf(shards, port)
		cla := BuildLoadAssignment(ClusterName(host, port), input, topo, View{Role: RoleSidecar, Network: n})
		var lines []string
		for _, l := range cla.GetEndpoints() {
			loc := l.GetLocality()
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				lines = append(lines, fmt.Sprintf("%s:%d weight %d locality %s", sa.GetAddress(), sa.GetPortValue(),
					e.GetLoadBalancingWeight().GetValue(), strings.Join([]string{loc.GetRegion(), loc.GetZone(), loc.GetSubZone()}, "/")))
			}
		}
		key := string(n)
		if key == "" {
			key = "(no network)"
		}
		out[key] = lines
	}
	return out
}

// Gateways returns the gateways in force.
func (s *Server) Gateways() []network.Gateway {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	return slices.Clone(s.gateways)
}
