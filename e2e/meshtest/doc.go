// Package meshtest runs the moving parts of a two-network mesh around Horizon, for
// the data-path test and the demo:
//
//   - Pods: real gRPC servers (grpc.testing.TestService) answering with their
//     version, serving Istio-style mTLS on a pod IP;
//   - the network gateway: nginx's stream module with ssl_preread, routing by SNI
//     without terminating TLS — a stand-in for Envoy in AUTO_PASSTHROUGH mode, whose
//     own configuration Horizon's tests check separately;
//   - clients: grpc-go's xDS client (proxyless gRPC) dialing xds:///host:port with
//     xDS mTLS credentials;
//   - an isolated network namespace whose loopback holds the pod and gateway IPs, so
//     that EndpointSlices can name them (the API server refuses loopback addresses).
package meshtest
