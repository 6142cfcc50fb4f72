package eds

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
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

// Proxies describes every connected stream, sorted by proxy ID.
func (s *Server) Proxies() []ProxyStatus {
	s.streamsMu.Lock()
	streams := make([]*xdsStream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.streamsMu.Unlock()
	out := make([]ProxyStatus, 0, len(streams))
	for _, st := range streams {
		st.mu.Lock()
		p := ProxyStatus{ID: st.proxyID, Stream: st.kind, Connected: st.connected, Types: map[string]*TypeSync{}, UpToDate: true}
		var snap groupSnapshot
		if g := st.group; g != nil {
			p.Group, p.Role, p.Network = g.view.Key(), g.view.Role, g.view.Network
			snap = g.current()
		}
		for typ, sb := range st.subs {
			c := sb.sync
			p.Types[typ] = &c
			if c.Sent != "" && c.Acked != sb.lastSent || st.pending(sb, snap[typ]) {
				p.UpToDate = false
			}
		}
		st.mu.Unlock()
		out = append(out, p)
	}
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
	var g *group
	s.streamsMu.Lock()
	for st := range s.streams {
		st.mu.Lock()
		if st.proxyID == id && st.group != nil {
			g = st.group
		}
		st.mu.Unlock()
		if g != nil {
			break
		}
	}
	s.streamsMu.Unlock()
	if g == nil {
		return nil, false, nil
	}
	snap := g.current()
	out := map[string][]json.RawMessage{}
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
		ts := snap[typ]
		if ts == nil {
			continue
		}
		for _, name := range ts.names {
			b, err := protojson.Marshal(ts.byName[name].msg)
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
