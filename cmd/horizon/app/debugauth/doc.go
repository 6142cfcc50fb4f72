// Package debugauth guards Horizon's debug endpoints. A Filter lets loopback callers
// through, and others only when they present a bearer token that the config cluster
// authenticates (TokenReview) and authorizes (SubjectAccessReview on the request's
// non-resource URL and verb), as Kubernetes components' delegated authentication and
// authorization do. Everything a caller controls is bounded: the token's length, the
// reviews in flight, and the cached results (a fixed-size LRU whose entries expire).
//
// The caller's address is the connection's: X-Forwarded-For and similar headers are
// never trusted, so a proxy on loopback in front of Horizon would make every caller
// look local (use --debug-access=token there). Tokens are never logged, cached or
// kept: the caches hold their SHA-256.
//
// Concurrency: a Filter is safe for concurrent use; it starts no goroutine.
package debugauth
