// Package kubetest is the test-facing side of cmd/localmesh, which starts real
// Kubernetes API servers (one etcd, any number of kube-apiservers, each an independent
// cluster) and writes objects into them.
//
// What only tests use lives here: Main (a TestMain body starting the clusters a
// package shares), Eventually and Consistently (polling with a timeout, failing the
// test), and LogBuffer. The runner's types and functions are re-exported under their
// names here (Start, Cluster, Deploy, Service, …) so that tests need only this import;
// they are localmesh's, which the shipped horizon-demo and horizon-load use without
// linking package testing.
//
// The binaries come from `make testbin`; see localmesh.BinDir.
//
// An Environment is safe for concurrent use; StartCluster may be called from parallel
// tests. A LogBuffer is safe for concurrent use.
package kubetest
