package xdsserver

import (
	"context"
	"slices"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// State of the world: every request lists every name the proxy wants of a type. A
// response of clusters or listeners holds every resource of the type the proxy
// subscribes to; one of endpoints or routes only those that changed or were newly
// subscribed to, which the spec allows for these types (partialType). A stream is
// sent a response only when a resource it subscribes to changed (or a request must
// be answered).

type sotwStream interface {
	Context() context.Context
	SendMsg(any) error
	Send(*discoverygrpc.DiscoveryResponse) error
	Recv() (*discoverygrpc.DiscoveryRequest, error)
}

func (s *Server) serveSotw(stream sotwStream, fixedType string) error {
	if err := s.begin(stream.Context()); err != nil {
		return err
	}
	defer s.end()
	st := s.openStream(streamKind(fixedType, false), false, fixedType)
	st.send = func(o *outgoing) error {
		if s.wire {
			return stream.SendMsg(o.wire())
		}
		return stream.Send(o.sotw())
	}
	defer s.closeStream(st)
	for {
		req, err := stream.Recv()
		if err != nil {
			return recvErr(err)
		}
		if err := st.reqs.wait(stream.Context(), req.GetResponseNonce() != "", s.metrics.throttled.Inc); err != nil {
			return recvErr(err)
		}
		typ := req.GetTypeUrl()
		if fixedType != "" {
			typ = fixedType
		}
		if err := st.admit(typ, len(req.GetResourceNames()), true); err != nil {
			return err
		}
		if err := st.join(req.GetNode(), typ); err != nil {
			return err
		}
		st.sotwRequest(typ, req)
	}
}

// sotwRequest takes one state-of-the-world request: an ACK, a NACK and/or a change
// of subscription. A request answering an older response than the last one sent is
// stale and ignored: the proxy will answer the last one too.
func (st *stream) sotwRequest(typ string, req *discoverygrpc.DiscoveryRequest) {
	st.mu.Lock()
	defer st.mu.Unlock()
	sb, first := st.subFor(typ)
	if !first && req.GetResponseNonce() != sb.lastNonce {
		return
	}
	if detail := req.GetErrorDetail(); detail != nil {
		st.nack(sb, detail.GetMessage())
		sb.resend = partialType(typ)
	} else if req.GetResponseNonce() != "" {
		sb.sync.Acked = req.GetVersionInfo()
	}
	// The request lists every name the proxy wants. The first request with none
	// subscribes to a whole type (of the types that allow it) and later requests
	// with none keep it so; "*" asks for the whole type explicitly; once a request
	// named anything, one with no names unsubscribes from everything.
	names := req.GetResourceNames()
	wildcard := slices.Contains(names, "*")
	same := sb.set.equal(names) // names are exactly the names in set
	switch {
	case first && len(names) == 0:
		wildcard = wildcardType(typ)
	case len(names) == 0 && !sb.named:
		wildcard = sb.wildcard
	}
	if len(names) > 0 {
		sb.named = true
	}
	if first || wildcard != sb.wildcard {
		sb.wildcard, sb.force = wildcard, true
	}
	if !same { // most requests are ACKs naming what they named before: no set built
		want := make([]string, 0, len(names))
		for _, n := range names {
			if n != "*" {
				want = append(want, st.intern(typ, n))
			}
		}
		slices.Sort(want)
		want = slices.Compact(want)
		for n := range sb.owed {
			if _, ok := slices.BinarySearch(want, n); !ok {
				delete(sb.owed, n)
			}
		}
		for _, n := range want {
			if !sb.set.has(n) {
				if sb.owed == nil {
					sb.owed = map[string]struct{}{}
				}
				sb.owed[n] = struct{}{}
				sb.force = true
			}
		}
		sb.set = st.feed.nameSet(want)
	}
	if sb.force {
		st.kickLocked()
	}
}

// sotwResponse fills out with what sb is owed at rs and records it as held. A
// subscription to a whole type is sent all of it. Otherwise, for endpoints and
// routes, a response carries only the resources the proxy does not hold at their
// current version — those that changed and those newly subscribed to — unless the
// proxy rejected a response since (resend); for the other types, every resource
// subscribed to. It reports whether the response answers anything: false when a
// partial response would carry nothing.
//
// d, if not nil, is what changed in rs since the version before; a partial
// response to a proxy that held that version looks only at those names and the
// owed ones, not at every name subscribed to.
func (st *stream) sotwResponse(sb *sub, rs *Resources, d *typeDiff, out *outgoing) bool {
	if sb.wildcard {
		out.res = make([]*Resource, 0, len(rs.names))
		for _, n := range rs.names {
			out.res = append(out.res, rs.byName[n])
		}
		out.all = rs
		sb.held, sb.owed = rs, nil
		return true
	}
	partial := partialType(sb.typ) && !sb.resend
	sb.resend = false
	names := sb.set.list()
	if partial && d != nil && sb.held.Version() == d.from {
		names = changedNames(sb, d)
	}
	for _, n := range names {
		r := rs.byName[n]
		if r == nil {
			continue // nothing to send; the proxy learns of it from CDS or LDS
		}
		_, owed := sb.owed[n]
		if h := sb.held.Get(n); !partial || owed || h == nil || h.version != r.version {
			out.res = append(out.res, r)
		}
	}
	sb.held, sb.owed = rs, nil
	return len(out.res) > 0 || !partial
}

// changedNames returns, sorted, the names sb subscribes to that d changed and the
// names sb is owed.
func changedNames(sb *sub, d *typeDiff) []string {
	out := make([]string, 0, len(sb.owed)+1)
	for _, n := range d.names {
		if sb.set.has(n) {
			out = append(out, n)
		}
	}
	for n := range sb.owed {
		if _, changed := slices.BinarySearch(d.names, n); !changed {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
