// Package localmesh runs a multi-cluster Kubernetes setup on one machine, for
// horizon-demo, horizon-load and Horizon's tests: one etcd and any number of real
// kube-apiservers sharing it under distinct etcd prefixes, each an independent cluster
// with its own certificates, admin credential and service-account signer.
//
// Besides starting clusters it does what a user and the missing controllers would:
// mint service-account tokens and kubeconfigs (the credential of a remote Secret),
// apply manifests as `kubectl apply` does, and write Services, pods and EndpointSlices
// (Deploy), nodes and namespaces. No kubelet runs: pod IPs and readiness are set
// through the status subresource. By default no controller runs either and Deploy
// writes EndpointSlices directly; a cluster started with
// ClusterOptions.ControllerManager runs kube-controller-manager's EndpointSlice
// controller, which makes them from Services and Pods as in a real cluster (DeployPods
// writes only the Service and the Pods).
//
// The binaries (etcd, kube-apiserver, kube-controller-manager) come from `make testbin`, which builds them from the Go module proxy into
// a cache outside the checkout. The directory is taken from $HORIZON_TESTBIN, or else
// from the default cache location used by hack/testbin.sh.
//
// A cluster can be stopped (Stop, Kill) and started again (Restart) with the same
// address, certificates, credentials and data, as a remote cluster that goes away and
// comes back.
//
// Sub-package dataplane runs what sits around Horizon on the data path: pods as gRPC
// servers, an SNI-routing gateway, mesh certificates, proxyless clients and a private
// network namespace.
//
// localmesh is a product package: it ships in horizon-demo and horizon-load and must
// not import package testing or anything under e2e/. The helpers that only tests use
// (polling, TestMain) are in e2e/kubetest, which wraps this package.
//
// An Environment is safe for concurrent use; StartCluster may be called from
// concurrent goroutines (parallel tests).
package localmesh
