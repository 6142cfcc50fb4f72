// Package meshsource watches the meshNetworks configuration and delivers the last good
// one, compiled.
//
// The configuration comes from one of two places: a file (the --mesh-networks flag,
// typically a mounted ConfigMap), watched through its directory so that the atomic
// symlink swap of a ConfigMap volume is seen; or the meshNetworks key of the istio
// ConfigMap in the system namespace, watched through the API server. A missing file,
// ConfigMap or key is an empty configuration. An invalid edit is rejected: it is
// logged, recorded in Status, and the last good configuration stays in force.
//
// Concurrency: Source is safe for concurrent use. Run owns the watch and is the only
// goroutine that reads and applies configurations; OnChange is called from it, one
// call at a time, and must not block for long.
package meshsource
