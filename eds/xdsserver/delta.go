package xdsserver

import (
	"context"
	"slices"
	"strings"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// Delta (incremental): requests subscribe and unsubscribe names, and responses
// hold only what changed, with the names that went.

type deltaStream interface {
	Context() context.Context
	SendMsg(any) error
	Send(*discoverygrpc.DeltaDiscoveryResponse) error
	Recv() (*discoverygrpc.DeltaDiscoveryRequest, error)
}

func (s *Server) serveDelta(stream deltaStream, fixedType string) error {
	if err := s.begin(stream.Context()); err != nil {
		return err
	}
	defer s.end()
	st := s.openStream(streamKind(fixedType, true), true, fixedType)
	st.send = func(o *outgoing) error {
		if s.wire {
			return stream.SendMsg(o.wire())
		}
		return stream.Send(o.deltaMsg())
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
		if err := st.admit(typ, len(req.GetResourceNamesSubscribe())+len(req.GetInitialResourceVersions()), false); err != nil {
			return err
		}
		if err := st.join(req.GetNode(), typ); err != nil {
			return err
		}
		st.deltaRequest(typ, req)
	}
}

// deltaRequest takes one delta request: subscription changes, an ACK or a NACK.
// Every name subscribed to is answered, with the resource or as removed, even if
// the server thinks the proxy holds it: the proxy may have dropped it.
func (st *stream) deltaRequest(typ string, req *discoverygrpc.DeltaDiscoveryRequest) {
	st.mu.Lock()
	defer st.mu.Unlock()
	sb, first := st.subFor(typ)
	subscribe := req.GetResourceNamesSubscribe()
	if first {
		for n, v := range req.GetInitialResourceVersions() {
			sb.have[st.intern(typ, n)] = v
		}
		sb.wildcard = len(subscribe) == 0 && wildcardType(typ)
		sb.force = true
	}
	if nonce := req.GetResponseNonce(); nonce != "" {
		if detail := req.GetErrorDetail(); detail != nil {
			st.nack(sb, detail.GetMessage())
		} else if nonce == sb.lastNonce {
			sb.sync.Acked = sb.lastSent
		}
	}
	initial := req.GetInitialResourceVersions()
	for _, n := range subscribe {
		if n == "*" {
			if !sb.wildcard {
				sb.wildcard = true
				sb.explicit = map[string]bool{}
				// Later, what the stream holds was subscribed to by name. On the first
				// request it holds initial_resource_versions, which are not
				// subscriptions: only the names the request lists are explicit.
				if first {
					for _, m := range subscribe {
						if m != "*" {
							sb.explicit[m] = true
						}
					}
				} else {
					for held := range sb.have {
						sb.explicit[held] = true
					}
				}
			}
			sb.force = true
			continue
		}
		n = st.intern(typ, n)
		if _, ok := initial[n]; !(first && ok) {
			sb.have[n] = unanswered
		}
		if sb.wildcard {
			if sb.explicit == nil {
				sb.explicit = map[string]bool{}
			}
			sb.explicit[n] = true
		}
		sb.force = true
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		switch {
		case n == "*":
			if sb.wildcard {
				for held := range sb.have {
					if !sb.explicit[held] {
						delete(sb.have, held)
					}
				}
				sb.wildcard, sb.explicit = false, nil
			}
		case sb.wildcard:
			// Still wanted through the wildcard: sent again, as the proxy dropped it.
			delete(sb.explicit, n)
			if _, ok := sb.have[n]; ok {
				sb.have[n] = unanswered
				sb.force = true
			}
		default:
			delete(sb.have, n)
		}
	}
	if sb.force {
		st.kickLocked()
	}
}

func (st *stream) deltaResponse(sb *sub, rs *Resources, out *outgoing) {
	if sb.wildcard {
		for _, n := range rs.names {
			if r := rs.byName[n]; sb.have[n] != r.version {
				out.res = append(out.res, r)
				sb.have[n] = r.version
			}
		}
	}
	for n, v := range sb.have {
		r := rs.byName[n]
		switch {
		case r == nil && v != "":
			out.removed = append(out.removed, n)
			if sb.wildcard && !sb.explicit[n] {
				delete(sb.have, n)
			} else {
				sb.have[n] = ""
			}
		case r != nil && v != r.version:
			out.res = append(out.res, r)
			sb.have[n] = r.version
		}
	}
	slices.Sort(out.removed)
	slices.SortFunc(out.res, func(a, b *Resource) int { return strings.Compare(a.name, b.name) })
}
