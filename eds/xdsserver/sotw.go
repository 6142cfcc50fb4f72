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
	wildcard, same := false, true // same: names are exactly the names in set
	distinct := 0
	for _, n := range names {
		if n == "*" {
			wildcard = true
		} else if sb.set.has(n) {
			distinct++
		} else {
			same = false
		}
	}
	same = same && distinct == sb.set.len() && distinctNames(names)
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

// distinctNames reports whether no name is listed twice. Short lists, the usual
// case, are checked without allocating; long ones are reported as not distinct,
// which sends the caller down its general path.
func distinctNames(names []string) bool {
	if len(names) > 64 {
		return false
	}
	for i := range names {
		for j := i + 1; j < len(names); j++ {
			if names[i] == names[j] {
				return false
			}
		}
	}
	return true
}

// sotwResponse fills out with what sb is owed at rs and records it as held. A
// subscription to a whole type is sent all of it. Otherwise, for endpoints and
// routes, a response carries only the resources the proxy does not hold at their
// current version — those that changed and those newly subscribed to — unless the
// proxy rejected a response since (resend); for the other types, every resource
// subscribed to. It reports whether the response answers anything: false when a
// partial response would carry nothing.
func (st *stream) sotwResponse(sb *sub, rs *Resources, out *outgoing) bool {
	if sb.wildcard {
		out.res = make([]*Resource, 0, len(rs.names))
		for _, n := range rs.names {
			out.res = append(out.res, rs.byName[n])
		}
		sb.held, sb.owed = rs, nil
		return true
	}
	partial := partialType(sb.typ) && !sb.resend
	sb.resend = false
	for _, n := range sb.set.list() {
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
