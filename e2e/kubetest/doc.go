// Package kubetest starts real Kubernetes API servers for tests: one etcd and any number
// of kube-apiservers sharing it under distinct etcd prefixes, each an independent
// cluster with its own certificates, admin credential and service-account signer.
//
// The binaries come from `make testbin`, which builds them from the Go module proxy into
// a cache outside the checkout. The directory is taken from $HORIZON_TESTBIN, or else
// from the default cache location used by hack/testbin.sh.
//
// No controller-manager or kubelet runs: tests write EndpointSlices themselves and set
// pod status through the status subresource.
//
// A cluster can be stopped (Stop, Kill) and started again (Restart) with the same
// address, certificates, credentials and data, as a remote cluster that goes away and
// comes back.
//
// An Environment is safe for concurrent use; StartCluster may be called from parallel
// tests.
package kubetest
