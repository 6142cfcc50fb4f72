package xdsserver

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// TypeSync is what one proxy was sent and acknowledged of one resource type.
type TypeSync struct {
	Sent       string    `json:"sent,omitempty"`
	Acked      string    `json:"acked,omitempty"`
	LastNack   string    `json:"lastNack,omitempty"`
	LastNackAt time.Time `json:"lastNackAt,omitempty"`
	Nacks      int       `json:"nacks,omitempty"`
}

// StreamStatus describes one connected stream.
type StreamStatus struct {
	ProxyID string
	// Group is the proxy's group; nil until the stream's first request.
	Group     Group
	Kind      string // ads, ads-delta, eds, cds, lds, rds
	Connected time.Time
	// Types by type URL.
	Types map[string]*TypeSync
	// UpToDate: every type the proxy was sent is acknowledged at the group's current
	// version.
	UpToDate bool
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

// Streams describes every connected stream, sorted by proxy ID, then by when it
// connected.
func (s *Server) Streams() []StreamStatus {
	s.streamsMu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.streamsMu.Unlock()
	out := make([]StreamStatus, 0, len(streams))
	for _, st := range streams {
		st.mu.Lock()
		p := StreamStatus{ProxyID: st.proxyID, Group: st.group, Kind: st.kind, Connected: st.connected,
			Types: map[string]*TypeSync{}, UpToDate: true}
		var snap *Snapshot
		if st.feed != nil {
			snap = st.feed.Current()
		}
		for typ, sb := range st.subs {
			c := sb.sync
			p.Types[typ] = &c
			if c.Sent != "" && c.Acked != sb.lastSent || st.pending(sb, snap.Resources(typ), nil) {
				p.UpToDate = false
			}
		}
		st.mu.Unlock()
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ProxyID != out[j].ProxyID {
			return out[i].ProxyID < out[j].ProxyID
		}
		return out[i].Connected.Before(out[j].Connected)
	})
	return out
}

// ConfigDump returns what the group of proxy id holds now — what that proxy was
// sent — as JSON resources by type URL. ok is false if no such proxy is connected.
func (s *Server) ConfigDump(id string) (map[string][]json.RawMessage, bool, error) {
	var feed *Feed
	s.streamsMu.Lock()
	for st := range s.streams {
		st.mu.Lock()
		if st.proxyID == id && st.feed != nil {
			feed = st.feed
		}
		st.mu.Unlock()
		if feed != nil {
			break
		}
	}
	s.streamsMu.Unlock()
	if feed == nil {
		return nil, false, nil
	}
	snap := feed.Current()
	out := map[string][]json.RawMessage{}
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
		rs := snap.Resources(typ)
		if rs == nil {
			continue
		}
		for _, name := range rs.names {
			m, err := rs.byName[name].Message()
			if err != nil {
				return nil, true, fmt.Errorf("decode %s %q: %w", typ, name, err)
			}
			b, err := protojson.Marshal(m)
			if err != nil {
				return nil, true, err
			}
			out[typ] = append(out[typ], b)
		}
	}
	return out, true, nil
}
