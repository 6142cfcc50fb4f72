package eds

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// GRPCTarget is the listener and route name a proxyless gRPC client asks for when it
// dials xds:///<host>:<port>.
func GRPCTarget(host string, port int32) string { return fmt.Sprintf("%s:%d", host, port) }

// CertProviderInstance is the certificate provider instance a proxyless gRPC client
// must define in its bootstrap (certificate_providers) for mTLS: it supplies the
// workload certificate ("default") and the root CA ("ROOTCA").
const CertProviderInstance = "default"

// buildGRPCListener is the API listener for xds:///<host>:<port>: an HTTP
// connection manager whose routes come over ADS.
func buildGRPCListener(host string, port int32) *listenerv3.Listener {
	name := GRPCTarget(host, port)
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource,
			RouteConfigName: name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}},
	}
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
	}
}

// buildGRPCRoute sends every call for <host>:<port> to the service port's cluster.
func buildGRPCRoute(host string, port int32) *routev3.RouteConfiguration {
	name := GRPCTarget(host, port)
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{name, host},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterName(host, port)},
				}},
			}},
		}},
	}
}

// buildGRPCCluster is the proxyless client's EDS cluster. gRPC has no transport
// socket matches, so with mTLS every endpoint is reached over mTLS, with the SNI a
// passthrough gateway routes on and certificates from the client's certificate
// provider instance, and the server must present one of peers' identities.
// grpc-go reads the accepted names from match_subject_alt_names (not the typed
// matchers Envoy is given) and compares them with every SAN of the certificate;
// a SPIFFE ID can only be a URI SAN.
func buildGRPCCluster(host string, port int32, mtls bool, peers PeerIdentities) *clusterv3.Cluster {
	name := ClusterName(host, port)
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource, ServiceName: name},
		ConnectTimeout:       durationpb.New(10 * time.Second),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	if mtls {
		c.TransportSocket = transportSocket("envoy.transport_sockets.tls", &tlsv3.UpstreamTlsContext{
			Sni: SNIName(host, port),
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
					InstanceName: CertProviderInstance, CertificateName: "default",
				},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
						InstanceName: CertProviderInstance, CertificateName: "ROOTCA",
					},
					MatchSubjectAltNames: peers.matchers(),
				}},
			},
		})
	}
	return c
}
