package eds

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// The xDS protocol, state of the world and incremental (delta), over ADS and the
// per-type services. Each stream costs one goroutine — the one gRPC runs its
// handler on, which reads requests; responses are written by a goroutine that
// exists only while the stream has something to send. A push never marshals: a
// group's resources are encoded once when they change (see publish), and a stream
// is woken only when a resource it subscribes to changed.

// typeOrder is the order in which one stream's pending responses are sent: clusters
// before their endpoints, listeners before their routes.
var typeOrder = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// wildcardTypes are the types a state-of-the-world request with no names
// subscribes to entirely.
func wildcardType(typ string) bool {
	return typ == resourcev3.ClusterType || typ == resourcev3.ListenerType
}

// resource is one encoded resource of a group. Immutable once published; shared by
// every response that carries it.
type resource struct {
	version string
	any     *anypb.Any
	delta   *discoverygrpc.Resource // the same, as delta responses carry it
	msg     types.Resource          // the message itself, for config_dump
	// What puts the encoding in a response without copying it (wire.go).
	sotwPrefix, deltaPrefix []byte
}

// typeSnapshot is what a group holds of one type. Immutable once published.
type typeSnapshot struct {
	version string
	byName  map[string]*resource
	names   []string // sorted
}

// groupSnapshot is a group's published resources by type URL.
type groupSnapshot map[string]*typeSnapshot

// sub is one stream's subscription to one type.
type sub struct {
	typ      string
	wildcard bool
	// have maps each subscribed name (and under a wildcard, each name the proxy
	// holds) to the version the proxy was sent; "" when it was sent none.
	have map[string]string
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
	force     bool
	lastNonce string
	lastSent  string // version of the last response (SotW version_info, delta system version)
	sync      TypeSync
}

// xdsStream is one connected xDS stream.
type xdsStream struct {
	s         *Server
	id        int64
	kind      string // ads, ads-delta, eds, cds, lds, rds
	delta     bool
	fixedType string // the type URL of a per-type stream; "" for ADS
	connected time.Time
	send      func(*outgoing) error

	mu       sync.Mutex
	proxyID  string
	group    *group
	subs     map[string]*sub // by type URL
	nonce    uint64
	flushing bool
	closed   bool
	counted  bool // in the connections gauge
	flusher  sync.WaitGroup
}

// xdsServer implements the gRPC discovery services on a Server.
type xdsServer struct {
	s *Server
	discoverygrpc.UnimplementedAggregatedDiscoveryServiceServer
	endpointservice.UnimplementedEndpointDiscoveryServiceServer
	clusterservice.UnimplementedClusterDiscoveryServiceServer
	listenerservice.UnimplementedListenerDiscoveryServiceServer
	routeservice.UnimplementedRouteDiscoveryServiceServer
}

// Register adds the ADS, EDS, CDS, LDS and RDS services to g.
func (s *Server) Register(g *grpc.Server) {
	x := &xdsServer{s: s}
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, x)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, x)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, x)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, x)
	routeservice.RegisterRouteDiscoveryServiceServer(g, x)
}

type sotwStream interface {
	Context() context.Context
	SendMsg(any) error
	Send(*discoverygrpc.DiscoveryResponse) error
	Recv() (*discoverygrpc.DiscoveryRequest, error)
}

type deltaStream interface {
	Context() context.Context
	SendMsg(any) error
	Send(*discoverygrpc.DeltaDiscoveryResponse) error
	Recv() (*discoverygrpc.DeltaDiscoveryRequest, error)
}

func (x *xdsServer) StreamAggregatedResources(st discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return x.s.serveSotw(st, "")
}

func (x *xdsServer) DeltaAggregatedResources(st discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return x.s.serveDelta(st, "")
}

func (x *xdsServer) StreamEndpoints(st endpointservice.EndpointDiscoveryService_StreamEndpointsServer) error {
	return x.s.serveSotw(st, resourcev3.EndpointType)
}

func (x *xdsServer) DeltaEndpoints(st endpointservice.EndpointDiscoveryService_DeltaEndpointsServer) error {
	return x.s.serveDelta(st, resourcev3.EndpointType)
}

func (x *xdsServer) FetchEndpoints(ctx context.Context, req *discoverygrpc.DiscoveryRequest) (*discoverygrpc.DiscoveryResponse, error) {
	return x.s.fetch(req, resourcev3.EndpointType)
}

func (x *xdsServer) StreamClusters(st clusterservice.ClusterDiscoveryService_StreamClustersServer) error {
	return x.s.serveSotw(st, resourcev3.ClusterType)
}

func (x *xdsServer) DeltaClusters(st clusterservice.ClusterDiscoveryService_DeltaClustersServer) error {
	return x.s.serveDelta(st, resourcev3.ClusterType)
}

func (x *xdsServer) FetchClusters(ctx context.Context, req *discoverygrpc.DiscoveryRequest) (*discoverygrpc.DiscoveryResponse, error) {
	return x.s.fetch(req, resourcev3.ClusterType)
}

func (x *xdsServer) StreamListeners(st listenerservice.ListenerDiscoveryService_StreamListenersServer) error {
	return x.s.serveSotw(st, resourcev3.ListenerType)
}

func (x *xdsServer) DeltaListeners(st listenerservice.ListenerDiscoveryService_DeltaListenersServer) error {
	return x.s.serveDelta(st, resourcev3.ListenerType)
}

func (x *xdsServer) FetchListeners(ctx context.Context, req *discoverygrpc.DiscoveryRequest) (*discoverygrpc.DiscoveryResponse, error) {
	return x.s.fetch(req, resourcev3.ListenerType)
}

func (x *xdsServer) StreamRoutes(st routeservice.RouteDiscoveryService_StreamRoutesServer) error {
	return x.s.serveSotw(st, resourcev3.RouteType)
}

func (x *xdsServer) DeltaRoutes(st routeservice.RouteDiscoveryService_DeltaRoutesServer) error {
	return x.s.serveDelta(st, resourcev3.RouteType)
}

func (x *xdsServer) FetchRoutes(ctx context.Context, req *discoverygrpc.DiscoveryRequest) (*discoverygrpc.DiscoveryResponse, error) {
	return x.s.fetch(req, resourcev3.RouteType)
}

var streamIDs atomic.Int64

func (s *Server) openStream(kind string, delta bool, fixedType string) *xdsStream {
	st := &xdsStream{s: s, id: streamIDs.Add(1), kind: kind, delta: delta, fixedType: fixedType,
		connected: time.Now(), subs: map[string]*sub{}}
	s.streamsMu.Lock()
	s.streams[st] = struct{}{}
	s.streamsMu.Unlock()
	return st
}

// closeStream detaches st and waits for its sender: gRPC forbids using a stream
// once its handler has returned.
func (s *Server) closeStream(st *xdsStream) {
	st.mu.Lock()
	st.closed = true
	g, counted := st.group, st.counted
	st.mu.Unlock()
	st.flusher.Wait()
	if g != nil {
		g.detach(st)
	}
	s.streamsMu.Lock()
	delete(s.streams, st)
	s.streamsMu.Unlock()
	if counted {
		s.metrics.connections.WithLabelValues(st.kind, string(g.view.Network)).Dec()
	}
}

func (s *Server) serveSotw(stream sotwStream, fixedType string) error {
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
		typ := req.GetTypeUrl()
		if fixedType != "" {
			typ = fixedType
		}
		if err := st.join(req.GetNode(), typ); err != nil {
			return err
		}
		st.sotwRequest(typ, req)
	}
}

func (s *Server) serveDelta(stream deltaStream, fixedType string) error {
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
		typ := req.GetTypeUrl()
		if fixedType != "" {
			typ = fixedType
		}
		if err := st.join(req.GetNode(), typ); err != nil {
			return err
		}
		st.deltaRequest(typ, req)
	}
}

func recvErr(err error) error {
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// join puts the stream in its proxy's group on its first request.
func (st *xdsStream) join(node *corev3.Node, typ string) error {
	if typ == "" {
		return status.Error(codes.InvalidArgument, "request without a type URL")
	}
	st.mu.Lock()
	joined := st.group != nil
	st.mu.Unlock()
	if joined {
		return nil
	}
	g := st.s.ensureGroup(node, st)
	st.mu.Lock()
	st.group, st.proxyID, st.counted = g, node.GetId(), true
	st.mu.Unlock()
	st.s.metrics.connections.WithLabelValues(st.kind, string(g.view.Network)).Inc()
	return nil
}

func (st *xdsStream) subFor(typ string) (*sub, bool) {
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

// sotwRequest takes one state-of-the-world request: an ACK, a NACK and/or a change
// of subscription. A request answering an older response than the last one sent is
// stale and ignored: the proxy will answer the last one too.
func (st *xdsStream) sotwRequest(typ string, req *discoverygrpc.DiscoveryRequest) {
	st.mu.Lock()
	defer st.mu.Unlock()
	sb, first := st.subFor(typ)
	if !first && req.GetResponseNonce() != sb.lastNonce {
		return
	}
	if detail := req.GetErrorDetail(); detail != nil {
		st.nack(sb, detail.GetMessage())
	} else if req.GetResponseNonce() != "" {
		sb.sync.Acked = req.GetVersionInfo()
	}
	// The request lists every name the proxy wants. The first request with none
	// subscribes to a whole type (of the types that allow it) and later requests
	// with none keep it so; "*" asks for the whole type explicitly; once a request
	// named anything, one with no names unsubscribes from everything.
	names := req.GetResourceNames()
	wildcard, same := false, true // same: names are exactly the names in have
	distinct := 0
	for _, n := range names {
		if n == "*" {
			wildcard = true
		} else if _, ok := sb.have[n]; ok {
			distinct++
		} else {
			same = false
		}
	}
	same = same && distinct == len(sb.have) && distinctNames(names)
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
		want := make(map[string]bool, len(names))
		for _, n := range names {
			want[n] = n != "*"
		}
		for n := range sb.have {
			if !want[n] {
				delete(sb.have, n)
			}
		}
		for n, ok := range want {
			if _, held := sb.have[n]; ok && !held {
				sb.have[st.intern(typ, n)] = unanswered
				sb.force = true
			}
		}
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

// deltaRequest takes one delta request: subscription changes, an ACK or a NACK.
// Every name subscribed to is answered, with the resource or as removed, even if
// the server thinks the proxy holds it: the proxy may have dropped it.
func (st *xdsStream) deltaRequest(typ string, req *discoverygrpc.DeltaDiscoveryRequest) {
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
				for held := range sb.have {
					sb.explicit[held] = true
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

// intern returns the group's copy of a resource name when it has one, so that a
// subscription does not keep the request's strings alive.
func (st *xdsStream) intern(typ, name string) string {
	if r := st.group.current()[typ].lookup(name); r != nil {
		return r.delta.Name
	}
	return name
}

func (ts *typeSnapshot) lookup(name string) *resource {
	if ts == nil {
		return nil
	}
	return ts.byName[name]
}

func (st *xdsStream) nack(sb *sub, msg string) {
	sb.sync.LastNack, sb.sync.LastNackAt = msg, time.Now()
	sb.sync.Nacks++
	st.s.metrics.nacks.WithLabelValues(sb.typ).Inc()
	st.s.log.Warn("proxy rejected a response", "proxy", st.proxyID, "typeUrl", sb.typ, "error", msg)
}

// wake is called by publish after the stream's group changed: it starts the sender
// if a subscribed resource changed.
func (st *xdsStream) wake(snap groupSnapshot) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, sb := range st.subs {
		if st.pending(sb, snap[sb.typ]) {
			st.kickLocked()
			return
		}
	}
}

// pending reports whether sb has something to send at ts. When it has not, it
// remembers ts's version so that the next check is one comparison.
func (st *xdsStream) pending(sb *sub, ts *typeSnapshot) bool {
	if ts == nil {
		return false // the group's first push has not happened
	}
	if sb.force {
		return true
	}
	if sb.seen == ts.version {
		return false
	}
	if sb.wildcard {
		return true
	}
	for n, v := range sb.have {
		if r := ts.byName[n]; r == nil && v != "" || r != nil && r.version != v {
			return true
		}
	}
	sb.seen = ts.version
	return false
}

// kickLocked starts the stream's sender unless it is running. st.mu is held.
func (st *xdsStream) kickLocked() {
	if st.flushing || st.closed || st.group == nil {
		return
	}
	st.flushing = true
	st.flusher.Add(1)
	go st.flush()
}

// flush sends what the stream's subscriptions are owed, one response at a time,
// and exits when nothing is.
func (st *xdsStream) flush() {
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
func (st *xdsStream) next() (*outgoing, bool) {
	snap := st.group.current()
	for _, typ := range st.order() {
		sb := st.subs[typ]
		ts := snap[typ]
		if !st.pending(sb, ts) {
			continue
		}
		pushed := !sb.force
		sb.force = false
		sb.seen = ts.version
		st.nonce++
		out := &outgoing{typ: typ, version: ts.version, nonce: strconv.FormatUint(st.nonce, 10), delta: st.delta}
		sb.lastNonce, sb.lastSent = out.nonce, ts.version
		sb.sync.Sent = ts.version
		if st.delta {
			st.deltaResponse(sb, ts, out)
		} else {
			st.sotwResponse(sb, ts, out)
		}
		return out, pushed
	}
	return nil, false
}

// order is the stream's subscribed types in typeOrder, then any others by name.
func (st *xdsStream) order() []string {
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

func (st *xdsStream) sotwResponse(sb *sub, ts *typeSnapshot, out *outgoing) {
	if sb.wildcard {
		out.res = make([]*resource, 0, len(ts.names))
		for _, n := range ts.names {
			out.res = append(out.res, ts.byName[n])
		}
		return
	}
	names := make([]string, 0, len(sb.have))
	for n := range sb.have {
		names = append(names, n)
	}
	slices.Sort(names)
	out.res = make([]*resource, 0, len(names))
	for _, n := range names {
		if r := ts.byName[n]; r != nil {
			out.res = append(out.res, r)
			sb.have[n] = r.version
		} else {
			sb.have[n] = ""
		}
	}
}

func (st *xdsStream) deltaResponse(sb *sub, ts *typeSnapshot, out *outgoing) {
	if sb.wildcard {
		for _, n := range ts.names {
			if r := ts.byName[n]; sb.have[n] != r.version {
				out.res = append(out.res, r)
				sb.have[n] = r.version
			}
		}
	}
	for n, v := range sb.have {
		r := ts.byName[n]
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
	slices.SortFunc(out.res, func(a, b *resource) int { return strings.Compare(a.delta.Name, b.delta.Name) })
}

// fetch answers a unary request with what the proxy's group holds now.
func (s *Server) fetch(req *discoverygrpc.DiscoveryRequest, typ string) (*discoverygrpc.DiscoveryResponse, error) {
	g := s.ensureGroup(req.GetNode(), nil)
	ts := g.current()[typ]
	if ts == nil {
		return nil, status.Error(codes.Unavailable, "no configuration yet")
	}
	if req.GetVersionInfo() == ts.version {
		return nil, status.Error(codes.Unavailable, "up to date") // the protocol's "skip"
	}
	resp := &discoverygrpc.DiscoveryResponse{VersionInfo: ts.version, TypeUrl: typ}
	names := req.GetResourceNames()
	if len(names) == 0 {
		names = ts.names
	}
	for _, n := range names {
		if r := ts.byName[n]; r != nil {
			resp.Resources = append(resp.Resources, r.any)
		}
	}
	return resp, nil
}
