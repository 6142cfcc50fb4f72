package xdsserver

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Limits bounds what clients may make the server do; Options.Limits. A zero field
// takes its default (DefaultLimits).
type Limits struct {
	// MaxStreams caps the streams (and unary Fetches) served at once over every
	// connection: one past it is refused with ResourceExhausted.
	MaxStreams int
	// NewStreamRate and NewStreamBurst are a token bucket on new streams and
	// Fetches, server-wide: one that finds no token waits up to NewStreamWait for
	// one, then is refused with ResourceExhausted.
	NewStreamRate  float64
	NewStreamBurst int
	NewStreamWait  time.Duration
	// RequestRate and RequestBurst are a token bucket per stream on requests that
	// do not answer a response (ACKs and NACKs do not take a token, up to
	// maxAnswers outstanding): a stream past it is read no faster than
	// RequestRate, which slows the proxy down through gRPC flow control.
	RequestRate  float64
	RequestBurst int
}

// DefaultLimits returns the Limits a zero field takes. The load tool's fleet of 10,000
// proxies opens its streams at once and is served in under 2 s, so 20,000 streams
// and a burst of 10,000 new ones let it (and a fleet reconnecting after a restart)
// in at once; after a burst, 1,000 new streams a second is about a third of one core.
// A proxy sends a request per response it is sent (an ACK, free) and a few to change
// what it subscribes to after a push (debounced to at most ~10 a second).
func DefaultLimits() Limits {
	return Limits{
		MaxStreams:     20_000,
		NewStreamRate:  1000,
		NewStreamBurst: 10_000,
		NewStreamWait:  time.Second,
		RequestRate:    10,
		RequestBurst:   100,
	}
}

// maxAnswers bounds the ACKs and NACKs a stream may send without a token: one per
// response sent, up to this many not yet answered.
const maxAnswers = 64

func (l *Limits) setDefaults() {
	d := DefaultLimits()
	if l.MaxStreams == 0 {
		l.MaxStreams = d.MaxStreams
	}
	if l.NewStreamRate == 0 {
		l.NewStreamRate = d.NewStreamRate
	}
	if l.NewStreamBurst == 0 {
		l.NewStreamBurst = d.NewStreamBurst
	}
	if l.NewStreamWait == 0 {
		l.NewStreamWait = d.NewStreamWait
	}
	if l.RequestRate == 0 {
		l.RequestRate = d.RequestRate
	}
	if l.RequestBurst == 0 {
		l.RequestBurst = d.RequestBurst
	}
}

// Validate reports a negative limit, naming its field.
func (l Limits) Validate() error {
	switch {
	case l.MaxStreams < 0:
		return fmt.Errorf("MaxStreams must not be negative, got %d", l.MaxStreams)
	case l.NewStreamRate < 0:
		return fmt.Errorf("NewStreamRate must not be negative, got %v", l.NewStreamRate)
	case l.NewStreamBurst < 0:
		return fmt.Errorf("NewStreamBurst must not be negative, got %d", l.NewStreamBurst)
	case l.NewStreamWait < 0:
		return fmt.Errorf("NewStreamWait must not be negative, got %s", l.NewStreamWait)
	case l.RequestRate < 0:
		return fmt.Errorf("RequestRate must not be negative, got %v", l.RequestRate)
	case l.RequestBurst < 0:
		return fmt.Errorf("RequestBurst must not be negative, got %d", l.RequestBurst)
	}
	return nil
}

// limiter applies Limits server-wide.
type limiter struct {
	l         Limits
	active    atomic.Int64 // streams and Fetches being served
	newStream *rate.Limiter
}

func newLimiter(l Limits) *limiter {
	return &limiter{l: l, newStream: rate.NewLimiter(rate.Limit(l.NewStreamRate), l.NewStreamBurst)}
}

// begin admits a new stream or Fetch: under MaxStreams, and with a token of the
// new-stream bucket within NewStreamWait. When it returns nil, the caller must call
// end when the stream ends.
func (s *Server) begin(ctx context.Context) error {
	lim := s.limits
	if n := lim.active.Add(1); n > int64(lim.l.MaxStreams) {
		lim.active.Add(-1)
		s.metrics.refused.WithLabelValues(reasonStreams).Inc()
		return status.Errorf(codes.ResourceExhausted, "xDS stream limit (%d streams) reached; retry later", lim.l.MaxStreams)
	}
	if !lim.newStream.Allow() {
		wctx, cancel := context.WithTimeout(ctx, lim.l.NewStreamWait)
		err := lim.newStream.Wait(wctx)
		cancel()
		if err != nil {
			lim.active.Add(-1)
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			s.metrics.refused.WithLabelValues(reasonStreamRate).Inc()
			return status.Errorf(codes.ResourceExhausted, "new xDS streams are arriving faster than %v a second (burst %d); retry later", lim.l.NewStreamRate, lim.l.NewStreamBurst)
		}
	}
	return nil
}

func (s *Server) end() { s.limits.active.Add(-1) }

// requestLimiter is one stream's request bucket.
type requestLimiter struct {
	bucket *rate.Limiter
	// answers is how many responses were sent that no request answered yet
	// (at most maxAnswers): the ACKs and NACKs that need no token.
	answers atomic.Int32
}

func newRequestLimiter(l Limits) *requestLimiter {
	return &requestLimiter{bucket: rate.NewLimiter(rate.Limit(l.RequestRate), l.RequestBurst)}
}

// sent records a response that the proxy will answer.
func (r *requestLimiter) sent() {
	for {
		n := r.answers.Load()
		if n >= maxAnswers || r.answers.CompareAndSwap(n, n+1) {
			return
		}
	}
}

// wait takes what request req needs before it is handled: an answer to a response
// if it is one (answer: it carries a response nonce), else a token, waiting for one
// if the stream has none. It fails only when ctx ends before a token comes, or
// would (a deadline). throttled is called when it waits.
func (r *requestLimiter) wait(ctx context.Context, answer bool, throttled func()) error {
	if answer {
		for {
			n := r.answers.Load()
			if n == 0 {
				break
			}
			if r.answers.CompareAndSwap(n, n-1) {
				return nil
			}
		}
	}
	if r.bucket.Allow() {
		return nil
	}
	throttled()
	if err := r.bucket.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Error(codes.ResourceExhausted, "xDS requests faster than the stream's request rate, past the stream's deadline")
	}
	return nil
}

// statsHandler counts the requests that gRPC refuses before (or instead of) the
// server's handlers: a message over the size limit, one that does not decode. gRPC
// writes its own errors with the prefix "grpc: "; the server's refusals, and a
// client going away, have other messages and are not counted here.
type statsHandler struct{ m *metrics }

func (h statsHandler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}

func (h statsHandler) HandleRPC(_ context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || end.Error == nil {
		return
	}
	st := status.Convert(end.Error)
	if !strings.HasPrefix(st.Message(), "grpc: ") {
		return
	}
	switch st.Code() {
	case codes.ResourceExhausted:
		h.m.refused.WithLabelValues(reasonMessageSize).Inc()
	case codes.Internal, codes.Unimplemented:
		h.m.refused.WithLabelValues(reasonMalformed).Inc()
	}
}

func (h statsHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (h statsHandler) HandleConn(context.Context, stats.ConnStats) {}
