package xdsserver

import (
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Groups tells the server which group of proxies a node belongs to: all the server
// knows of groups. What sets groups apart, and when one is made or dropped, is the
// implementation's business.
type Groups interface {
	// Group returns the group node belongs to; node is never nil (the server
	// refuses a request without one). If attach is not nil, Group makes the group if there is
	// none and calls attach with it before returning, at a time the group cannot be
	// dropped (a group with streams attached to its Feed is kept): the server
	// attaches a new stream there. If attach is nil (a unary Fetch), Group need not
	// keep what it returns: it may answer with a group made for this call only.
	// An error refuses the node; it should be a gRPC status (the server returns it
	// as is). Group is called from many goroutines at once.
	Group(node *corev3.Node, attach func(Group)) (Group, error)
}

// GroupsFunc is a function that serves as Groups.
type GroupsFunc func(node *corev3.Node, attach func(Group)) (Group, error)

// Group calls f.
func (f GroupsFunc) Group(node *corev3.Node, attach func(Group)) (Group, error) {
	return f(node, attach)
}

// Group is one group of proxies: every proxy in it is sent the snapshots published
// on its Feed.
type Group interface {
	// Feed is where the group's snapshots are published; the same Feed every call.
	Feed() *Feed
	// MetricLabel is the group's value of the network label of the connections
	// metric; the same value every call.
	MetricLabel() string
}

// Feed holds a group's current snapshot and the streams that serve it. The zero
// Feed is ready to use: no snapshot yet, no streams. It is safe for concurrent use.
type Feed struct {
	cur     atomic.Pointer[publication]
	mu      sync.Mutex
	streams map[*stream]struct{} // guarded by mu

	setsMu sync.Mutex
	// sets are the name sets the group's streams subscribe to, by their names
	// joined; an entry goes once no stream holds its set. Guarded by setsMu.
	sets map[string]weak.Pointer[nameSet]
}

// publication is one published snapshot and, for each type whose resources
// changed since the snapshot before, what changed: a stream that held the type at
// the version before checks and sends only the changed names, however many it
// subscribes to. Immutable.
type publication struct {
	snap  *Snapshot
	diffs map[string]*typeDiff // by type URL; a type not here did not change or has no diff
}

// typeDiff is what differs between two Resources of one type.
type typeDiff struct {
	from, to string   // the versions before and after
	names    []string // sorted: the names added, removed or at another version
}

// diff returns what changed in rs since the version before, if rs is the
// publication's and the diff is known.
func (p *publication) diff(typ string, rs *Resources) *typeDiff {
	if p == nil {
		return nil
	}
	d := p.diffs[typ]
	if d == nil || rs == nil || d.to != rs.version {
		return nil
	}
	return d
}

// diffResources returns the names whose resource differs between old and rs.
func diffResources(old, rs *Resources) *typeDiff {
	d := &typeDiff{from: old.version, to: rs.version}
	for n, r := range rs.byName {
		if o := old.byName[n]; o != r && (o == nil || o.version != r.version) {
			d.names = append(d.names, n)
		}
	}
	for n := range old.byName {
		if rs.byName[n] == nil {
			d.names = append(d.names, n)
		}
	}
	slices.Sort(d.names)
	return d
}

// Current returns the snapshot published last (nil before the first).
func (f *Feed) Current() *Snapshot {
	if p := f.cur.Load(); p != nil {
		return p.snap
	}
	return nil
}

// Publish makes snap the group's snapshot and wakes the streams that subscribe to
// a resource that changed. What changed is worked out once here, per type, so
// that each stream checks only the changed names against what it holds.
func (f *Feed) Publish(snap *Snapshot) {
	p := &publication{snap: snap}
	if prev := f.cur.Load(); prev != nil {
		for typ, rs := range snap.byType {
			if old := prev.snap.byType[typ]; old != nil && old != rs && old.version != rs.version {
				if p.diffs == nil {
					p.diffs = map[string]*typeDiff{}
				}
				p.diffs[typ] = diffResources(old, rs)
			}
		}
	}
	f.mu.Lock()
	f.cur.Store(p)
	streams := make([]*stream, 0, len(f.streams))
	for st := range f.streams {
		streams = append(streams, st)
	}
	f.mu.Unlock()
	for _, st := range streams {
		st.wake(p)
	}
}

// Streams returns how many streams are attached.
func (f *Feed) Streams() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.streams)
}

func (f *Feed) attach(st *stream) {
	f.mu.Lock()
	if f.streams == nil {
		f.streams = map[*stream]struct{}{}
	}
	f.streams[st] = struct{}{}
	f.mu.Unlock()
}

func (f *Feed) detach(st *stream) {
	f.mu.Lock()
	delete(f.streams, st)
	f.mu.Unlock()
}

// nameSet is a set of resource names that state-of-the-world streams subscribe to.
// Immutable, and shared by the streams of a group that subscribe to the same names.
// Its methods accept a nil *nameSet, the empty set.
type nameSet struct {
	names []string         // sorted
	index map[string]int32 // position in names
}

func (ns *nameSet) len() int {
	if ns == nil {
		return 0
	}
	return len(ns.names)
}

func (ns *nameSet) has(name string) bool {
	if ns == nil {
		return false
	}
	_, ok := ns.index[name]
	return ok
}

// equal reports whether names, leaving out "*", are exactly the set's names, each
// once, in any order. It does not allocate for sets of up to 1,024 names: a
// proxy's ACK repeats the names it subscribes to, and is checked against its set
// at every response.
func (ns *nameSet) equal(names []string) bool {
	var small [16]uint64
	seen := small[:]
	if w := (ns.len() + 63) / 64; w > len(small) {
		seen = make([]uint64, w)
	}
	count := 0
	for _, n := range names {
		if n == "*" {
			continue
		}
		if ns == nil {
			return false
		}
		i, ok := ns.index[n]
		if !ok || seen[i/64]&(1<<(i%64)) != 0 {
			return false
		}
		seen[i/64] |= 1 << (i % 64)
		count++
	}
	return count == ns.len()
}

// list returns the names, sorted; callers must not change the slice.
func (ns *nameSet) list() []string {
	if ns == nil {
		return nil
	}
	return ns.names
}

// nameSet returns the set of names (sorted, without duplicates), which it owns
// from then on: the one a stream of the group already holds if there is one.
func (f *Feed) nameSet(names []string) *nameSet {
	if len(names) == 0 {
		return nil
	}
	key := strings.Join(names, "\x00")
	f.setsMu.Lock()
	defer f.setsMu.Unlock()
	if ns := f.sets[key].Value(); ns != nil {
		return ns
	}
	ns := &nameSet{names: slices.Clip(names), index: make(map[string]int32, len(names))}
	for i, n := range names {
		ns.index[n] = int32(i)
	}
	if f.sets == nil {
		f.sets = map[string]weak.Pointer[nameSet]{}
	}
	f.sets[key] = weak.Make(ns)
	runtime.AddCleanup(ns, f.dropSet, key)
	return ns
}

// dropSet forgets the set of key once no stream holds it.
func (f *Feed) dropSet(key string) {
	f.setsMu.Lock()
	defer f.setsMu.Unlock()
	if f.sets[key].Value() == nil {
		delete(f.sets, key)
	}
}
