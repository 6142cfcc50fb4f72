package xdsserver

import (
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// typeOrder is the order in which one stream's pending responses are sent: clusters
// before their endpoints, listeners before their routes.
var typeOrder = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// wildcardType reports whether a state-of-the-world request with no names
// subscribes to the whole of type typ.
func wildcardType(typ string) bool {
	return typ == resourcev3.ClusterType || typ == resourcev3.ListenerType
}

// partialType reports whether a state-of-the-world response of type typ may carry
// only some of the resources the proxy subscribes to: the xDS spec makes clusters
// and listeners "full state" (a response without one removes it) but not
// endpoints and routes, which a proxy keeps until a response carries them again.
func partialType(typ string) bool {
	return typ == resourcev3.EndpointType || typ == resourcev3.RouteType
}

// sub is one stream's subscription to one type.
type sub struct {
	typ      string
	wildcard bool
	// Delta: have maps each subscribed name (and under a wildcard, each name the
	// proxy holds) to the version the proxy was sent; "" when it was sent none.
	have map[string]string
	// State of the world: set is the names subscribed to (besides "*"), shared
	// with the group's other streams that name the same ones (Feed.nameSet); the
	// proxy holds each at its version in held (none if held has none), except the
	// names in owed, subscribed to and not answered since. A stream costs a few
	// words per type, however many names it subscribes to.
	set  *nameSet
	held *Resources
	owed map[string]struct{}
	// explicit holds the names a delta wildcard subscription also names (nil
	// without a wildcard: then every name in have is explicit).
	explicit map[string]bool
	// named: a state-of-the-world request named resources (an empty list no
	// longer means the legacy wildcard).
	named bool
	// seen is the type version last compared with have: nothing to send at it.
	seen string
	// force makes the next flush respond even if nothing changed (a new
	// subscription must be answered).
	force bool
	// resend makes the next state-of-the-world response of a partial type carry
	// every subscribed resource, not only those that changed: the proxy rejected
	// a response, and what it kept of it is not known.
	resend    bool
	lastNonce string
	lastSent  string // version of the last response (SotW version_info, delta system version)
	sync      TypeSync
}

// stream is one connected xDS stream. It costs one goroutine — the one gRPC runs
// its handler on, which reads requests; responses are written by a goroutine that
// exists only while the stream has something to send (flush).
type stream struct {
	s         *Server
	id        int64
	kind      string // ads, ads-delta, eds, cds, lds, rds
	delta     bool
	fixedType string // the type URL of a per-type stream; "" for ADS
	connected time.Time
	send      func(*outgoing) error
	reqs      *requestLimiter

	mu       sync.Mutex
	proxyID  string
	node     *corev3.Node // the first request's, for Regroup
	group    Group
	feed     *Feed           // group's
	subs     map[string]*sub // by type URL
	nonce    uint64
	flushing bool
	closed   bool
	counted  bool // in the connections gauge
	flusher  sync.WaitGroup
}

func (s *Server) openStream(kind string, delta bool, fixedType string) *stream {
	st := &stream{s: s, id: s.lastStream.Add(1), kind: kind, delta: delta, fixedType: fixedType,
		connected: time.Now(), subs: map[string]*sub{}, reqs: newRequestLimiter(s.limits.l)}
	s.streamsMu.Lock()
	s.streams[st] = struct{}{}
	s.streamsMu.Unlock()
	return st
}

// closeStream detaches st and waits for its sender: gRPC forbids using a stream
// once its handler has returned.
func (s *Server) closeStream(st *stream) {
	st.mu.Lock()
	st.closed = true
	g, counted := st.group, st.counted
	st.mu.Unlock()
	st.flusher.Wait()
	if g != nil {
		g.Feed().detach(st)
	}
	s.streamsMu.Lock()
	delete(s.streams, st)
	s.streamsMu.Unlock()
	if counted {
		s.metrics.connections.WithLabelValues(st.kind, g.MetricLabel()).Dec()
	}
}

func recvErr(err error) error {
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// errNoNode refuses a stream whose first request, or a Fetch, has no node: the
// node says which view of the mesh the proxy is served.
var errNoNode = status.Error(codes.InvalidArgument, "request has no node: the first request of a stream, and every Fetch, must carry the proxy's node (id and metadata)")

// join puts the stream in its proxy's group on its first request, which must carry
// a node.
func (st *stream) join(node *corev3.Node, typ string) error {
	if typ == "" {
		return status.Error(codes.InvalidArgument, "request without a type URL")
	}
	st.mu.Lock()
	joined := st.group != nil
	st.mu.Unlock()
	if joined {
		return nil
	}
	if node == nil {
		st.s.metrics.refused.WithLabelValues(reasonNoNode).Inc()
		return errNoNode
	}
	g, err := st.s.groups.Group(node, func(g Group) { g.Feed().attach(st) })
	if err != nil {
		return err
	}
	st.mu.Lock()
	st.group, st.feed, st.proxyID, st.counted, st.node = g, g.Feed(), node.GetId(), true, node
	st.mu.Unlock()
	st.s.metrics.connections.WithLabelValues(st.kind, g.MetricLabel()).Inc()
	return nil
}

// admit refuses a request that would take the stream past its bounds: a new type
// URL past maxTypesPerStream, or adds more names subscribed past Server.maxNames
// (replace: the request's names replace the type's, as in state of the world).
// Names a wildcard brings are counted too, but only a request that adds names is
// refused.
func (st *stream) admit(typ string, adds int, replace bool) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	sb := st.subs[typ]
	if sb == nil && len(st.subs) >= maxTypesPerStream {
		st.s.metrics.refused.WithLabelValues(reasonTypes).Inc()
		return status.Errorf(codes.ResourceExhausted, "stream subscribes to more than %d type URLs", maxTypesPerStream)
	}
	if adds == 0 {
		return nil
	}
	total := adds
	for _, x := range st.subs {
		if x != sb || !replace {
			total += len(x.have) + x.set.len()
		}
	}
	if total > st.s.maxNames {
		st.s.metrics.refused.WithLabelValues(reasonNames).Inc()
		return status.Errorf(codes.ResourceExhausted, "stream would subscribe to %d resource names, more than %d", total, st.s.maxNames)
	}
	return nil
}

func (st *stream) subFor(typ string) (*sub, bool) {
	sb := st.subs[typ]
	if sb != nil {
		return sb, false
	}
	sb = &sub{typ: typ, have: map[string]string{}}
	st.subs[typ] = sb
	return sb, true
}

// unanswered is the version in have of a name subscribed to and not yet answered:
// a response is owed whether or not the resource exists (it never equals a
// resource's version, a base-36 hash).
const unanswered = "\x00"

// intern returns the group's copy of a resource name when it has one, so that a
// subscription does not keep the request's strings alive.
func (st *stream) intern(typ, name string) string {
	if r := st.feed.Current().Resources(typ).Get(name); r != nil {
		return r.name
	}
	return name
}

// maxLogged bounds what a proxy sent that is logged or kept for status (a NACK's
// error detail, its node ID, a type URL): a proxy may send megabytes.
const maxLogged = 256

// truncate returns s cut to at most n bytes on a rune boundary, saying how long it
// was.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// typeLabel is a type URL as a metric label: one of the types served, else
// "other", so that made-up type URLs add no series.
func typeLabel(typ string) string {
	if slices.Contains(typeOrder, typ) {
		return typ
	}
	return "other"
}

func (st *stream) nack(sb *sub, msg string) {
	msg = truncate(msg, maxLogged)
	sb.sync.LastNack, sb.sync.LastNackAt = msg, time.Now()
	sb.sync.Nacks++
	st.s.metrics.nacks.WithLabelValues(typeLabel(sb.typ)).Inc()
	st.s.log.Warn("proxy rejected a response", "proxy", truncate(st.proxyID, maxLogged),
		"typeUrl", truncate(sb.typ, maxLogged), "error", msg)
}

// wake is called by Publish after the stream's group changed: it starts the sender
// if a subscribed resource changed.
func (st *stream) wake(p *publication) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, sb := range st.subs {
		rs := p.snap.Resources(sb.typ)
		if st.pending(sb, rs, p.diff(sb.typ, rs)) {
			st.kickLocked()
			return
		}
	}
}

// pending reports whether sb has something to send at rs. When it has not, it
// remembers rs's version so that the next check is one comparison. d, if not nil,
// is what changed in rs since the version before: a subscription that was up to
// date there checks only those names.
func (st *stream) pending(sb *sub, rs *Resources, d *typeDiff) bool {
	if rs == nil {
		return false // the group's first push has not happened
	}
	if sb.force {
		return true
	}
	if sb.seen == rs.version {
		return false
	}
	if sb.wildcard {
		return true
	}
	if !st.delta {
		if len(sb.owed) > 0 {
			return true
		}
		if sb.held != rs {
			if d != nil && sb.held.Version() == d.from {
				for _, n := range d.names {
					if sb.set.has(n) {
						return true
					}
				}
			} else {
				for _, n := range sb.set.list() {
					if r, h := rs.byName[n], sb.held.Get(n); r != h && (r == nil || h == nil || r.version != h.version) {
						return true
					}
				}
			}
		}
		sb.held = rs // the same versions of every name: drop the older Resources
		sb.seen = rs.version
		return false
	}
	if d != nil && sb.seen == d.from {
		// Nothing was owed at the version before: only a changed name can be.
		for _, n := range d.names {
			if v, ok := sb.have[n]; ok {
				if r := rs.byName[n]; r == nil && v != "" || r != nil && r.version != v {
					return true
				}
			}
		}
	} else {
		for n, v := range sb.have {
			if r := rs.byName[n]; r == nil && v != "" || r != nil && r.version != v {
				return true
			}
		}
	}
	sb.seen = rs.version
	return false
}

// kickLocked starts the stream's sender unless it is running. st.mu is held.
func (st *stream) kickLocked() {
	if st.flushing || st.closed || st.group == nil {
		return
	}
	st.flushing = true
	st.flusher.Add(1)
	go st.flush()
}

// flush sends what the stream's subscriptions are owed, one response at a time,
// and exits when nothing is.
func (st *stream) flush() {
	defer st.flusher.Done()
	for {
		st.mu.Lock()
		if st.closed {
			st.flushing = false
			st.mu.Unlock()
			return
		}
		out, pushed := st.next()
		if out == nil {
			st.flushing = false
			st.mu.Unlock()
			return
		}
		st.mu.Unlock()
		err := st.send(out)
		if err != nil {
			st.s.log.Debug("send failed; the stream ends", "proxy", st.proxyID, "error", err)
			st.mu.Lock()
			st.closed, st.flushing = true, false
			st.mu.Unlock()
			return
		}
		if pushed {
			if at := st.s.lastChange.Load(); at != 0 {
				st.s.metrics.pushLatency.Observe(time.Since(time.Unix(0, at)).Seconds())
			}
		}
	}
}

// next builds the next response owed, in typeOrder, and records it as sent. pushed
// says it answers a change rather than a request. st.mu is held.
func (st *stream) next() (*outgoing, bool) {
	p := st.feed.cur.Load()
	var snap *Snapshot
	if p != nil {
		snap = p.snap
	}
	for _, typ := range st.order() {
		sb := st.subs[typ]
		rs := snap.Resources(typ)
		d := p.diff(typ, rs)
		if !st.pending(sb, rs, d) {
			continue
		}
		pushed := !sb.force
		sb.force = false
		sb.seen = rs.version
		out := &outgoing{typ: typ, version: rs.version, delta: st.delta}
		if st.delta {
			st.deltaResponse(sb, rs, out)
		} else if !st.sotwResponse(sb, rs, d, out) && pushed {
			// Only resources the proxy holds went: a partial response would carry
			// nothing, and the proxy keeps what it holds anyway.
			continue
		}
		st.nonce++
		out.nonce = strconv.FormatUint(st.nonce, 10)
		sb.lastNonce, sb.lastSent = out.nonce, rs.version
		st.reqs.sent()
		sb.sync.Sent = rs.version
		return out, pushed
	}
	return nil, false
}

// order is the stream's subscribed types in typeOrder, then any others by name.
func (st *stream) order() []string {
	out := make([]string, 0, len(st.subs))
	for _, t := range typeOrder {
		if st.subs[t] != nil {
			out = append(out, t)
		}
	}
	if len(out) < len(st.subs) {
		var rest []string
		for t := range st.subs {
			if !slices.Contains(typeOrder, t) {
				rest = append(rest, t)
			}
		}
		slices.Sort(rest)
		out = append(out, rest...)
	}
	return out
}
