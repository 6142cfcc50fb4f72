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
	"time"
)

// MinResolverTTL is the shortest refresh interval a Resolver accepts outside tests.
const MinResolverTTL = 30 * time.Second

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
	// OnChange is called from Run after a refresh in which the answer for any host
	// changed. It must not block for long. Optional.
	OnChange func()
	// Logger receives failed look-ups; slog.Default() when nil.
	Logger *slog.Logger
}

// Validate reports whether the options can be used, after defaults.
func (o *ResolverOptions) Validate() error {
	var errs []error
	if o.TTL <= 0 || (o.TTL < MinResolverTTL && !o.AllowShortTTL) {
		errs = append(errs, fmt.Errorf("resolver TTL %s: must be at least %s", o.TTL, MinResolverTTL))
	}
	if o.LookupTimeout <= 0 {
		errs = append(errs, fmt.Errorf("resolver lookup timeout %s: must be positive", o.LookupTimeout))
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
	if o.OnChange == nil {
		o.OnChange = func() {}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// forgetAfter is how many TTLs a host may go unasked before the Resolver drops it.
const forgetAfter = 3

// Resolver is a DNS cache for gateway host names: Lookup answers from the cache, and
// Run refreshes the cache every TTL and reports changed answers. Its methods are safe
// for concurrent use.
type Resolver struct {
	opts ResolverOptions

	mu    sync.Mutex
	hosts map[string]*resolverEntry // guarded by mu
}

type resolverEntry struct {
	ready    chan struct{} // closed when the first resolution finished
	addrs    []string      // guarded by Resolver.mu; sorted
	lastUsed time.Time     // guarded by Resolver.mu
}

// NewResolver returns a Resolver with opts, defaults applied.
func NewResolver(opts ResolverOptions) (*Resolver, error) {
	opts.defaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Resolver{opts: opts, hosts: map[string]*resolverEntry{}}, nil
}

// Lookup returns the cached addresses of host, sorted. The first call for a host
// resolves it before returning; later calls answer from the cache, which Run keeps
// fresh. An IP address is returned as is. A host that cannot be resolved has no
// addresses until a refresh succeeds. Lookup's signature fits Networks.Gateways.
func (r *Resolver) Lookup(host string) []string {
	if a, err := netip.ParseAddr(host); err == nil {
		return []string{a.String()}
	}
	r.mu.Lock()
	e, ok := r.hosts[host]
	if !ok {
		e = &resolverEntry{ready: make(chan struct{})}
		r.hosts[host] = e
	}
	e.lastUsed = time.Now()
	r.mu.Unlock()
	if !ok {
		addrs, _ := r.resolve(context.Background(), host)
		r.mu.Lock()
		e.addrs = addrs
		r.mu.Unlock()
		close(e.ready)
	}
	<-e.ready
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(e.addrs)
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

// Run refreshes every cached host each TTL until ctx is done, and calls OnChange after
// a refresh that changed any answer. A failed look-up keeps the previous answer.
// Hosts not asked for over several TTLs are dropped. Run starts no goroutines.
func (r *Resolver) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.TTL)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.refresh(ctx) {
			r.opts.OnChange()
		}
	}
}

// refresh resolves every cached host again and reports whether any answer changed.
func (r *Resolver) refresh(ctx context.Context) bool {
	now := time.Now()
	r.mu.Lock()
	hosts := make(map[string]*resolverEntry, len(r.hosts))
	for h, e := range r.hosts {
		select {
		case <-e.ready:
		default:
			continue // its first resolution is still under way
		}
		if now.Sub(e.lastUsed) > forgetAfter*r.opts.TTL {
			delete(r.hosts, h)
			continue
		}
		hosts[h] = e
	}
	r.mu.Unlock()

	changed := false
	for _, h := range slices.Sorted(maps.Keys(hosts)) {
		if ctx.Err() != nil {
			return changed
		}
		addrs, err := r.resolve(ctx, h)
		if err != nil {
			continue
		}
		e := hosts[h]
		r.mu.Lock()
		if !slices.Equal(e.addrs, addrs) {
			e.addrs = addrs
			changed = true
		}
		r.mu.Unlock()
	}
	return changed
}

// resolve looks host up and returns its IP addresses, sorted and deduplicated.
func (r *Resolver) resolve(ctx context.Context, host string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.LookupTimeout)
	defer cancel()
	raw, err := r.opts.Lookup(ctx, host)
	if err != nil {
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
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}
