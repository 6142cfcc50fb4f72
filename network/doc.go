// Package network holds the identifiers and pure functions shared by every part of
// Horizon that reasons about clusters and networks: cluster and network IDs and the
// Istio-compatible label names.
//
// Everything here is immutable data or pure functions and is safe for concurrent use.
package network
