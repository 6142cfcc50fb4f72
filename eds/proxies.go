package eds

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/horizon-mesh/horizon/eds/xdsserver"
	"github.com/horizon-mesh/horizon/network"
)

// TypeSync is what one proxy was sent and acknowledged of one resource type.
type TypeSync = xdsserver.TypeSync

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

// Proxies describes every connected stream, sorted by proxy ID.
func (s *Server) Proxies() []ProxyStatus {
	streams := s.xds.Streams()
	out := make([]ProxyStatus, 0, len(streams))
	for _, st := range streams {
		p := ProxyStatus{ID: st.ProxyID, Stream: st.Kind, Connected: st.Connected, Types: st.Types, UpToDate: st.UpToDate}
		if g, ok := st.Group.(*group); ok {
			p.Group, p.Role, p.Network = g.view.Key(), g.view.Role, g.view.Network
		}
		out = append(out, p)
	}
	return out
}

// ConfigDump returns what the group of proxy id holds now — what that proxy was
// sent — as JSON resources by type URL. ok is false if no such proxy is connected.
func (s *Server) ConfigDump(id string) (map[string][]json.RawMessage, bool, error) {
	return s.xds.ConfigDump(id)
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
