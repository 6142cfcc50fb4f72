// Package secrets turns remote Secrets into clusters.
//
// A remote Secret lives in the system namespace (or in a namespace of its own, named
// by Options.SecretsNamespace), carries the label istio/multiCluster=true and holds one
// kubeconfig per data key; the key is the cluster ID. The Controller watches those Secrets in the config cluster, treats every
// kubeconfig as untrusted input (see LoadKubeconfig), and tells a ClusterHandler which
// clusters to add, re-credential or remove, at most Options.MaxClusters of them. It
// knows nothing about endpoints or xDS.
//
// Kubeconfig contents never appear in logs, errors or status: they name the Secret and
// the key instead.
//
// Each accepted key's status carries when its credential expires (see KeyStatus),
// judged against Options.ExpiryWarning whenever Status is called; a second goroutine
// logs, once per credential, when one comes within the warning window and when it
// expires.
//
// Concurrency: the Controller's state is owned by its single worker goroutine; Status
// and HasSynced are safe to call from any goroutine. Handler methods are called from
// the worker goroutine, one at a time.
package secrets
