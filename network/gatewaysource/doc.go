// Package gatewaysource watches Istio Gateway resources (networking.istio.io, served
// as v1, v1beta1 or v1alpha3) in the config cluster and keeps the servers that use
// tls.mode AUTO_PASSTHROUGH: the ports and hosts a network's ingress gateway
// passes mTLS through on, and the gateway pods they select.
//
// Concurrency: a Source's state is guarded by its mutex; Servers and HasSynced are
// safe from any goroutine; OnChange is called from the watch goroutine.
package gatewaysource
