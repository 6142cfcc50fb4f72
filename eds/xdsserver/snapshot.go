package xdsserver

import (
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource is one encoded resource. Immutable: it is shared by every snapshot that
// holds it and every response that carries it. It keeps its encoding and what
// puts the encoding in a response, nothing else: a group holds thousands.
type Resource struct {
	typeURL, name, version string
	// sotw is the resource as a state-of-the-world response carries it (one
	// entry of its resources: an Any holding the encoding), in one buffer that
	// every response hands to gRPC as it is; b, the encoding, is its tail.
	sotw mem.Buffer
	b    []byte
	// delta puts b in a delta response, without copying it (wire.go).
	delta []byte
}

// NewResource returns the resource of type typeURL named name, at version, whose
// encoding is b. It keeps only the encoding, not the message: a group's resources
// cost their bytes (the messages of a thousand ClusterLoadAssignments are several
// times their size); Message decodes them again for the rare reader that wants
// them. b is copied once, behind what puts it in a state-of-the-world response, in
// one allocation with what puts it in a delta one.
func NewResource(typeURL, name, version string, b []byte) *Resource {
	prefixes, sotw := wirePrefixes(typeURL, name, version, len(b))
	entry := sotw + len(b)
	all := make([]byte, entry+len(prefixes)-sotw)
	copy(all, prefixes[:sotw])
	copy(all[sotw:], b)
	copy(all[entry:], prefixes[sotw:])
	return &Resource{typeURL: typeURL, name: name, version: version,
		sotw: mem.SliceBuffer(all[:entry:entry]), b: all[sotw:entry:entry], delta: all[entry:]}
}

// Name is the resource's name.
func (r *Resource) Name() string { return r.name }

// Version is the resource's version.
func (r *Resource) Version() string { return r.version }

// Bytes is the resource's encoding; callers must not change it.
func (r *Resource) Bytes() []byte { return r.b }

// Any is the resource as responses carry it: a new Any each call, whose value is
// the shared encoding, which callers must not change.
func (r *Resource) Any() *anypb.Any { return &anypb.Any{TypeUrl: r.typeURL, Value: r.b} }

// Message decodes the resource (for config dumps and tests): a new message each
// call, which the caller owns.
func (r *Resource) Message() (proto.Message, error) { return r.Any().UnmarshalNew() }

// Resources is what a snapshot holds of one type: resources by name and the type's
// version. Immutable. Its methods accept a nil *Resources, which holds nothing.
type Resources struct {
	version string
	byName  map[string]*Resource
	names   []string // sorted

	// all is every resource as a state-of-the-world response carries them, in
	// names order, in one buffer: a subscription to the whole type (CDS, LDS) is
	// sent it. Built by the first such response; every stream of the group shares it.
	allOnce sync.Once
	all     mem.Buffer
}

// sotwAll returns every resource, in names order, as the resources of a state of
// the world response.
func (rs *Resources) sotwAll() mem.Buffer {
	rs.allOnce.Do(func() {
		n := 0
		for _, name := range rs.names {
			n += rs.byName[name].sotw.Len()
		}
		b := make([]byte, 0, n)
		for _, name := range rs.names {
			b = append(b, rs.byName[name].sotw.ReadOnlyData()...)
		}
		rs.all = mem.SliceBuffer(b)
	})
	return rs.all
}

// NewResources returns the resources in byName (keyed by their names), which it owns
// from then on. The type's version is a hash of the names and resource versions:
// equal contents give equal versions, here, after a restart and on another replica,
// and any resource that changes, appears or goes changes it.
func NewResources(byName map[string]*Resource) *Resources {
	rs := &Resources{byName: byName, names: slices.Sorted(maps.Keys(byName))}
	h := fnv.New64a()
	for _, n := range rs.names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(byName[n].version))
		h.Write([]byte{0})
	}
	rs.version = strconv.FormatUint(h.Sum64(), 36)
	return rs
}

// Version is the type's version.
func (rs *Resources) Version() string {
	if rs == nil {
		return ""
	}
	return rs.version
}

// Get returns the resource named name, or nil.
func (rs *Resources) Get(name string) *Resource {
	if rs == nil {
		return nil
	}
	return rs.byName[name]
}

// Len is the number of resources.
func (rs *Resources) Len() int {
	if rs == nil {
		return 0
	}
	return len(rs.names)
}

// Names returns the resources' names, sorted; callers must not change the slice.
func (rs *Resources) Names() []string {
	if rs == nil {
		return nil
	}
	return rs.names
}

// Snapshot is what a group of proxies is served: its resources by type URL.
// Immutable. Its methods accept a nil *Snapshot, which holds nothing.
type Snapshot struct {
	byType map[string]*Resources
}

// NewSnapshot returns the snapshot of byType (resources by type URL), which it owns
// from then on.
func NewSnapshot(byType map[string]*Resources) *Snapshot {
	return &Snapshot{byType: byType}
}

// Resources returns the snapshot's resources of type typeURL; nil if it has none,
// which is not the same as having an empty set: a type without resources is not
// answered.
func (s *Snapshot) Resources(typeURL string) *Resources {
	if s == nil {
		return nil
	}
	return s.byType[typeURL]
}
