package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
)

// MinResolverTTL is the shortest refresh interval a Resolver accepts outside tests.
const MinResolverTTL = 30 * time.Second

// Resolver bounds applied when ResolverOptions leave them zero.
const (
	// DefaultResolverMaxHosts is how many host names a Resolver caches by default.
	DefaultResolverMaxHosts = 256
	// DefaultResolverMaxAddrs is how many addresses a Resolver keeps per host by default.
	DefaultResolverMaxAddrs = 16
	// DefaultResolverConcurrency is how many look-ups a Resolver runs at once by default.
	DefaultResolverConcurrency = 8
)

// ResolverOptions configure a Resolver.
type ResolverOptions struct {
	// TTL is how often every cached host is resolved again; at least MinResolverTTL.
	// Default MinResolverTTL.
	TTL time.Duration
	// AllowShortTTL lifts the MinResolverTTL floor; for tests.
	AllowShortTTL bool
	// Lookup resolves a host name to addresses. Default net.DefaultResolver.LookupHost.
	Lookup func(ctx context.Context, host string) ([]string, error)
	// LookupTimeout bounds one Lookup call. Default 5s.
	LookupTimeout time.Duration
	// MaxHosts bounds the host names cached; a new name past it gets no addresses.
	// Default DefaultResolverMaxHosts.
	MaxHosts int
	// MaxAddrs bounds the addresses kept per host: the first MaxAddrs of the sorted
	// answer. Default DefaultResolverMaxAddrs.
	MaxAddrs int
	// Concurrency bounds the look-ups running at once. Default DefaultResolverConcurrency.
	Concurrency int
	// OnChange is called from Run's goroutines after a look-up changed the addresses
	// of a host (its first non-empty answer included), so that the caller pushes the
	// new answer. It may be called concurrently and must not block for long. Optional.
	OnChange func()
	// Logger receives failed look-ups; slog.Default() when nil.
	Logger *slog.Logger
}

// AddFlags binds the options that come from the command line.
func (o *ResolverOptions) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.TTL, "gateway-dns-refresh-interval", MinResolverTTL, "how often gateway DNS names are resolved again (at least 30s)")
	fs.IntVar(&o.Concurrency, "gateway-dns-concurrency", DefaultResolverConcurrency, "most gateway DNS look-ups running at once (0: the default)")
	fs.IntVar(&o.MaxHosts, "gateway-dns-max-names", DefaultResolverMaxHosts, "most gateway DNS names resolved and cached; a new name past it gets no gateway address (0: the default)")
	fs.IntVar(&o.MaxAddrs, "gateway-dns-max-addresses", DefaultResolverMaxAddrs, "most addresses kept per gateway DNS name, the first of the sorted answer (0: the default)")
}

// Validate reports whether the options can be used; a zero value stands for its
// default. Its errors name the flags.
func (o *ResolverOptions) Validate() error {
	var errs []error
	if o.TTL < 0 || (o.TTL < MinResolverTTL && o.TTL != 0 && !o.AllowShortTTL) {
		errs = append(errs, fmt.Errorf("--gateway-dns-refresh-interval: must be at least %s, got %s", MinResolverTTL, o.TTL))
	}
	if o.LookupTimeout < 0 {
		errs = append(errs, fmt.Errorf("resolver lookup timeout %s: must not be negative", o.LookupTimeout))
	}
	for _, f := range []struct {
		flag string
		v    int
	}{{"--gateway-dns-max-names", o.MaxHosts}, {"--gateway-dns-max-addresses", o.MaxAddrs}, {"--gateway-dns-concurrency", o.Concurrency}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", f.flag, f.v))
		}
	}
	return errors.Join(errs...)
}

func (o *ResolverOptions) defaults() {
	if o.TTL == 0 {
		o.TTL = MinResolverTTL
	}
	if o.Lookup == nil {
		o.Lookup = net.DefaultResolver.LookupHost
	}
	if o.LookupTimeout == 0 {
		o.LookupTimeout = 5 * time.Second
	}
	if o.MaxHosts == 0 {
		o.MaxHosts = DefaultResolverMaxHosts
	}
	if o.MaxAddrs == 0 {
		o.MaxAddrs = DefaultResolverMaxAddrs
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultResolverConcurrency
	}
	if o.OnChange == nil {
		o.OnChange = func() {}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// forgetAfter is how many TTLs a host may go unasked before the Resolver drops it.
const forgetAfter = 3

// Resolver is a DNS cache for gateway host names. Lookup never waits on DNS: it
// answers from the cache and queues a name it has not seen; Run resolves queued names
// and, every TTL, every cached name, in the background with at most Concurrency
// look-ups at once, and calls OnChange when a host's addresses changed. Its methods
// are safe for concurrent use.
type Resolver struct {
	opts ResolverOptions

	// queue holds host names waiting for a look-up; its capacity is MaxHosts, and a
	// host is queued at most once at a time (resolverEntry.queued), so sends under mu
	// do not block.
	queue chan string

	mu         sync.Mutex
	hosts      map[string]*resolverEntry // guarded by mu
	overWarned bool                      // guarded by mu; the MaxHosts warning was logged

	lookups, failures, refused atomic.Uint64
}

// ResolverStats counts what a Resolver did since it was made.
type ResolverStats struct {
	// Lookups is the DNS look-ups made; Failures those that failed (timeouts
	// included).
	Lookups, Failures uint64
	// Names is the host names cached now.
	Names int
	// Refused counts Lookup calls for a name not cached that were answered with no
	// address because MaxHosts names are cached: each push asks again.
	Refused uint64
}

// Stats returns the Resolver's counts.
func (r *Resolver) Stats() ResolverStats {
	r.mu.Lock()
	names := len(r.hosts)
	r.mu.Unlock()
	return ResolverStats{Lookups: r.lookups.Load(), Failures: r.failures.Load(), Names: names, Refused: r.refused.Load()}
}

type resolverEntry struct {
	addrs    []string  // guarded by Resolver.mu; sorted, at most MaxAddrs
	lastUsed time.Time // guarded by Resolver.mu
	queued   bool      // guarded by Resolver.mu; in queue or being looked up
}

// NewResolver returns a Resolver with opts, defaults applied.
func NewResolver(opts ResolverOptions) (*Resolver, error) {
	opts.defaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Resolver{
		opts:  opts,
		queue: make(chan string, opts.MaxHosts),
		hosts: map[string]*resolverEntry{},
	}, nil
}

// Lookup returns the cached addresses of host, sorted, without waiting on DNS. A
// host not seen before has no addresses: it is queued for Run, which calls OnChange
// once its first answer arrives. An IP address is returned as is. A host that cannot
// be resolved has no addresses until a refresh succeeds; past MaxHosts cached names,
// a new one gets none. Lookup's signature fits Networks.Gateways.
func (r *Resolver) Lookup(host string) []string {
	if a, err := netip.ParseAddr(host); err == nil {
		return []string{a.String()}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.hosts[host]
	if !ok {
		if len(r.hosts) >= r.opts.MaxHosts {
			r.refused.Add(1)
			if !r.overWarned {
				r.overWarned = true
				r.opts.Logger.Warn("too many gateway host names to resolve; ignoring new ones",
					"max", r.opts.MaxHosts, "host", host)
			}
			return nil
		}
		e = &resolverEntry{}
		r.hosts[host] = e
		r.enqueueLocked(host, e)
	}
	e.lastUsed = time.Now()
	return slices.Clone(e.addrs)
}

// enqueueLocked queues host for a look-up unless it is queued already. r.mu is held.
func (r *Resolver) enqueueLocked(host string, e *resolverEntry) {
	if e.queued {
		return
	}
	select {
	case r.queue <- host:
		e.queued = true
	default:
		// Full only with stale names of dropped hosts in it; the next refresh retries.
	}
}

// Cached returns every cached host with its addresses, for display.
func (r *Resolver) Cached() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]string, len(r.hosts))
	for h, e := range r.hosts {
		out[h] = slices.Clone(e.addrs)
	}
	return out
}

// Run resolves queued hosts as they come and every cached host each TTL, with
// Concurrency look-up goroutines, until ctx is done; it returns once they have ended.
// OnChange is called after a look-up that changed a host's addresses. A failed
// look-up keeps the previous answer. Hosts not asked for over several TTLs are
// dropped.
func (r *Resolver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range r.opts.Concurrency {
		wg.Go(func() { r.work(ctx) })
	}
	t := time.NewTicker(r.opts.TTL)
	defer func() {
		t.Stop()
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.refresh(time.Now())
	}
}

// refresh drops hosts unused for forgetAfter TTLs and queues every other one.
func (r *Resolver) refresh(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range slices.Sorted(maps.Keys(r.hosts)) {
		e := r.hosts[h]
		if now.Sub(e.lastUsed) > forgetAfter*r.opts.TTL {
			delete(r.hosts, h)
			continue
		}
		r.enqueueLocked(h, e)
	}
	if len(r.hosts) < r.opts.MaxHosts {
		r.overWarned = false
	}
}

// work resolves queued hosts until ctx is done.
func (r *Resolver) work(ctx context.Context) {
	for {
		var host string
		select {
		case <-ctx.Done():
			return
		case host = <-r.queue:
		}
		r.mu.Lock()
		_, ok := r.hosts[host]
		r.mu.Unlock()
		if !ok {
			continue // dropped while queued
		}
		addrs, err := r.resolve(ctx, host)
		r.mu.Lock()
		e, ok := r.hosts[host]
		changed := false
		if ok {
			e.queued = false
			if err == nil && !slices.Equal(e.addrs, addrs) {
				e.addrs = addrs
				changed = true
			}
		}
		r.mu.Unlock()
		if changed {
			r.opts.OnChange()
		}
	}
}

// resolve looks host up and returns its IP addresses, sorted, deduplicated and cut
// to MaxAddrs.
func (r *Resolver) resolve(ctx context.Context, host string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.LookupTimeout)
	defer cancel()
	r.lookups.Add(1)
	raw, err := r.opts.Lookup(ctx, host)
	if err != nil {
		r.failures.Add(1)
		r.opts.Logger.Warn("resolve gateway host failed", "host", host, "error", err)
		return nil, fmt.Errorf("resolve %q: %w", host, err)
	}
	var addrs []netip.Addr
	for _, s := range raw {
		if a, err := netip.ParseAddr(s); err == nil {
			addrs = append(addrs, a.Unmap().WithZone(""))
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if len(addrs) > r.opts.MaxAddrs {
		r.opts.Logger.Warn("gateway host has too many addresses; keeping the first ones",
			"host", host, "addresses", len(addrs), "max", r.opts.MaxAddrs)
		addrs = addrs[:r.opts.MaxAddrs]
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}
