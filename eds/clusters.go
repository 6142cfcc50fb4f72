package eds

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/horizon-mesh/horizon/network"
)

// adsSource points a resource at the ADS stream it came on.
var adsSource = &corev3.ConfigSource{
	ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	ResourceApiVersion:    corev3.ApiVersion_V3,
}

// sdsSource is the local secret discovery service of an Istio sidecar, where the
// workload certificate ("default") and root CA ("ROOTCA") come from.
var sdsSource = &corev3.ConfigSource{
	ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
		ApiType:             corev3.ApiConfigSource_GRPC,
		TransportApiVersion: corev3.ApiVersion_V3,
		GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "sds-grpc"},
		}}},
	}},
	ResourceApiVersion: corev3.ApiVersion_V3,
}

// BuildCluster builds the sidecar's EDS cluster for a service port: endpoints marked
// tlsMode=istio (pods with sidecars, and gateways) get Istio mTLS with the SNI
// outbound_.<port>_._.<host>, so a passthrough gateway can route it, and accept
// only a server certificate with one of peers' identities; others get plaintext.
func BuildCluster(host string, port int32, peers PeerIdentities) *clusterv3.Cluster {
	name := ClusterName(host, port)
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource, ServiceName: name},
		ConnectTimeout:       durationpb.New(10 * time.Second),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{
			{
				Name:            "tlsMode-istio",
				Match:           &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue(network.TLSModeIstio)}},
				TransportSocket: upstreamMTLS(SNIName(host, port), peers),
			},
			{
				Name:            "tlsMode-disabled",
				Match:           &structpb.Struct{},
				TransportSocket: transportSocket("envoy.transport_sockets.raw_buffer", &rawbufferv3.RawBuffer{}),
			},
		},
	}
}

// upstreamMTLS is Istio's client TLS context: the workload certificate and root CA
// from the sidecar's SDS, and the server's identity matched against peers' URI SANs.
func upstreamMTLS(sni string, peers PeerIdentities) *corev3.TransportSocket {
	var sans []*tlsv3.SubjectAltNameMatcher
	for _, m := range peers.matchers() {
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m})
	}
	return transportSocket("envoy.transport_sockets.tls", &tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"istio-peer-exchange", "istio"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default", SdsConfig: sdsSource}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: sdsSource},
				},
			},
		},
	})
}

func transportSocket(name string, cfg proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: name, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// mustAny wraps a message built here; it only fails for a nil message.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}
