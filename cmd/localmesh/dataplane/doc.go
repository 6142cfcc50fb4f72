// Package dataplane runs the moving parts of a two-network mesh around Horizon on one
// machine, for horizon-demo and the data-path test:
//
//   - Pods: real gRPC servers (grpc.testing.TestService) answering with their
//     version, serving Istio-style mTLS on a pod IP;
//   - the network gateway: nginx's stream module with ssl_preread, routing by SNI
//     without terminating TLS — a stand-in for Envoy in AUTO_PASSTHROUGH mode, whose
//     own configuration Horizon's tests check separately;
//   - mesh certificates: a CA and a workload identity (SPIFFE URI), on disk for
//     grpc-go's file_watcher certificate provider;
//   - clients: grpc-go's xDS client (proxyless gRPC) dialing xds:///host:port with
//     xDS mTLS credentials; a second one Horizon did not write, Node's
//     @grpc/grpc-js-xds (NodeClient: a node process running nodeclient/client.js,
//     whose npm packages InstallNodeClient installs); and FetchCLA, a one-shot ADS
//     request;
//   - an isolated network namespace whose loopback holds the pod and gateway IPs, so
//     that EndpointSlices can name them (the API server refuses loopback addresses).
//
// The Kubernetes side (clusters, objects) is package localmesh. Like it, dataplane is a
// product package, shipped in horizon-demo: it must not import package testing or
// anything under e2e/.
//
// Client.Call may be called from concurrent goroutines, NodeClient's methods from one
// at a time; starting and stopping (StartPod, StartGateway, StartNodeClient, Stop,
// Close) belong to the goroutine that owns the part.
package dataplane
