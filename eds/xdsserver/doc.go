// Package xdsserver is Horizon's xDS protocol server: state of the world and delta
// (incremental), over ADS and the per-type services (EDS, CDS, LDS, RDS), and unary
// Fetch. It serves immutable snapshots and knows nothing of what is in them, of
// networks or of the cluster registry; package eds builds the snapshots.
//
// One file per job: server.go (options, gRPC service registration), groups.go (the
// Groups interface through which the caller says which group a node belongs to, and
// the Feed on which a group's snapshots are published), snapshot.go (the immutable
// Snapshot, Resources and Resource), stream.go (a stream's subscriptions and its
// sender), sotw.go and delta.go (the two protocol variants), fetch.go, wire.go (the
// codec that hands gRPC a response as its resources' shared bytes), status.go
// (connected streams, config dumps), limits.go (stream and request limits, and the
// gRPC stats handler that counts what gRPC refuses), regroup.go (moving streams
// whose group changed) and metrics.go.
//
// A resource is encoded once, before it reaches a snapshot (NewResource), and every
// response that carries it shares those bytes. Publishing a snapshot on a Feed wakes
// only the streams that subscribe to a resource that changed. A state-of-the-world
// response of endpoints or routes carries only what the proxy does not hold at its
// current version (sotw.go). A state-of-the-world subscription is a name set shared
// by the group's streams that name the same resources, plus the Resources the
// stream holds them at: a few words per stream, however many names.
//
// Bounds: a stream subscribes to at most Options.MaxNames names and 16 type URLs;
// a request past either ends it with ResourceExhausted. Its first request, and a
// Fetch, must carry a node (InvalidArgument). Options.Limits caps streams over all
// connections and puts token buckets on new streams (server-wide) and on each
// stream's requests other than ACKs and NACKs. Metric labels come from fixed sets
// (a type URL not served is "other"), and what a proxy sent is logged truncated.
//
// Concurrency: the Server and Feed are safe for concurrent use; Snapshot, Resources
// and Resource are immutable. Each stream costs the goroutine gRPC runs its handler
// on, which reads requests, plus a sender goroutine only while it has something to
// send; a stream's handler returns only after its sender has exited. Groups.Group
// is called from many stream goroutines at once, and by Regroup, which holds no
// lock while it calls it. Lock order: the Groups
// implementation's own lock (held while it calls attach), then Feed.mu, then
// stream.mu, then Feed.setsMu (a leaf); Server.streamsMu before stream.mu. Feed.Publish releases Feed.mu
// before it takes any stream.mu.
package xdsserver
