// Package app assembles Horizon: from Options (the flags of `horizon serve`), the
// config cluster's client config and a logger, New builds the remote-secret
// controller, the cluster registry (with the config cluster in it), the meshNetworks
// and Gateway sources, the DNS resolver for gateway names, the xDS server, the
// gRPC server (with its TLS options and, with a client CA, interceptors binding each
// proxy's node to its certificate's SPIFFE ID) and the HTTP server (/healthz, /readyz
// and /metrics open; /debug/ and every other path guarded by package debugauth), and
// the adapters between them. Run runs them until its context ends and shuts down
// gracefully.
//
// It is the one place where Horizon's packages are wired together: `horizon serve`
// runs it, and so do the end-to-end tests, in-process; horizon-demo and horizon-load
// run the horizon binary, so they run it too. Following Kubernetes'
// cmd/<binary>/app convention, the command keeps only what is the process's: where
// the config cluster's credentials come from (--kubeconfig, --context, in-cluster),
// logging (--log-level, client-go's klog routed into slog), signals and exit codes.
//
//	opts := app.NewOptions()
//	opts.Secrets.ClusterID = "cluster1"
//	h, err := app.New(opts, restConfig, logger)
//	if err != nil { … }
//	err = h.Run(ctx) // until ctx is done
//
// Concurrency: New and Run are called once each, from one goroutine; Run blocks. The
// accessors (XDSAddr, Registry, Ready, …) are safe to call from any goroutine once
// New has returned, before, during and after Run; the components they return are
// safe for concurrent use. The components' callbacks run on their own goroutines,
// which Run starts and joins.
package app
