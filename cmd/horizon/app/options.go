package app

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/spf13/pflag"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/clusterregistry/exportstatus"
	"github.com/horizon-mesh/horizon/cmd/horizon/app/debugauth"
	"github.com/horizon-mesh/horizon/eds"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/gatewaysource"
	"github.com/horizon-mesh/horizon/network/meshsource"
	"github.com/horizon-mesh/horizon/secrets"
)

// Options is what shapes a running Horizon: everything `horizon serve` takes from its
// flags except where the config cluster's credentials come from and how to log, which
// the caller hands to New. Start from NewOptions, which holds the flags' defaults.
//
// The component options hold flag values and wiring alike. New sets the wiring —
// clients, handlers, sources, metrics, loggers, change callbacks, and the system
// namespace of Registry and MeshNetworks (Secrets.Namespace) — and ignores what was
// there; the other fields are the caller's.
type Options struct {
	// XDSAddress is where the xDS (ADS) gRPC server listens. Empty: DefaultXDSPort on
	// every interface with TLS, on 127.0.0.1 without (see XDSListenAddress).
	XDSAddress string
	// XDSAllowPlaintextRemote lets plaintext xDS (no TLS.CertFile) listen on an address
	// other than a loopback one. Without it, Validate refuses such an address: proxies
	// would not be authenticated, and anyone reaching it could read their configuration.
	XDSAllowPlaintextRemote bool
	// TrustDomain is the SPIFFE trust domain of the mesh's workload identities,
	// spiffe://<TrustDomain>/ns/<namespace>/sa/<service account>. With a client CA
	// (TLS.ClientCAFile) a proxy's client certificate must carry such an identity,
	// which bounds the namespace and service account its node may claim. The mTLS
	// clusters sent to proxies accept servers of these identities (eds.Options).
	TrustDomain string
	// HTTPAddress is where /healthz, /readyz, /metrics and /debug/ are served.
	HTTPAddress string
	// Pprof serves net/http/pprof under /debug/pprof/ on HTTPAddress.
	Pprof bool
	// Debug says who may call /debug/ (--debug-access, --debug-token-audience).
	Debug debugauth.Options

	// Secrets holds the system namespace (--namespace) and the config cluster's ID
	// (--cluster-id).
	Secrets  secrets.Options
	Registry clusterregistry.Options
	EDS      eds.Options
	// MeshNetworks.File is --mesh-networks; empty: the meshNetworks key of ConfigMap
	// istio in the system namespace.
	MeshNetworks meshsource.Options
	// MeshConfig.File is --mesh-config; empty: the mesh key of ConfigMap istio in the
	// system namespace. Its discoverySelectors scope the namespaces watched.
	MeshConfig meshsource.MeshConfigOptions
	Gateways   gatewaysource.Options
	// Resolver bounds the background DNS resolution of gateway names.
	Resolver network.ResolverOptions
	// TLS configures the xDS server's TLS; plaintext by default.
	TLS TLSOptions
	// ExportStatus says whether and how fast ServiceExport Conflict conditions are
	// written, in MCS mode (Registry.MCS).
	ExportStatus exportstatus.Options
}

// NewOptions returns the options with the defaults of `horizon serve`'s flags.
func NewOptions() Options {
	var o Options
	// Binding the flags sets every field to its flag's default.
	o.AddFlags(pflag.NewFlagSet("defaults", pflag.ContinueOnError))
	return o
}

// AddFlags binds the options to `horizon serve`'s flags, with their defaults.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.MeshNetworks.File, "mesh-networks", "", "meshNetworks file, reloaded when it changes (empty: the meshNetworks key of ConfigMap istio in --namespace)")
	fs.StringVar(&o.MeshConfig.File, "mesh-config", "", "Istio mesh config file, reloaded when it changes (empty: the mesh key of ConfigMap istio in --namespace); "+
		"its discoverySelectors (namespace label selectors) limit the namespaces watched in every cluster, the system namespace always included")
	fs.StringVar(&o.XDSAddress, "xds-address", "", "address of the xDS (ADS) gRPC server (empty: 127.0.0.1:15010 in plaintext, :15010 with --xds-tls-cert); "+
		"plaintext xDS listens on loopback addresses only, unless --xds-allow-plaintext-remote")
	fs.BoolVar(&o.XDSAllowPlaintextRemote, "xds-allow-plaintext-remote", false, "allow plaintext xDS (no --xds-tls-cert) on a non-loopback --xds-address, such as :15010 in a pod: "+
		"proxies are then not authenticated, and anyone who reaches the address reads their configuration")
	fs.StringVar(&o.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh's workload identities (spiffe://<trust-domain>/ns/<namespace>/sa/<service account>); "+
		"with --xds-client-ca, a proxy's client certificate must carry such an identity and its node may claim only that namespace and service account; "+
		"the mTLS clusters sent to sidecars and proxyless clients accept only servers with the identities of the pods behind the service")
	fs.StringVar(&o.HTTPAddress, "http-address", ":15014", "address of the HTTP server: /healthz, /readyz and /metrics (open), /debug/ (see --debug-access)")
	fs.BoolVar(&o.Pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on --http-address")
	o.Secrets.AddFlags(fs)
	o.Registry.AddFlags(fs)
	o.EDS.AddFlags(fs)
	o.Resolver.AddFlags(fs)
	o.TLS.AddFlags(fs)
	o.Debug.AddFlags(fs)
	o.ExportStatus.AddFlags(fs)
}

// Validate checks the values that come from flags; New also checks the wiring.
func (o *Options) Validate() error {
	var errs []error
	for _, a := range []struct{ flag, addr string }{{"--xds-address", o.XDSListenAddress()}, {"--http-address", o.HTTPAddress}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.flag, err))
		}
	}
	if err := o.validatePlaintext(); err != nil {
		errs = append(errs, err)
	}
	if err := validateTrustDomain(o.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("--trust-domain: %w", err))
	}
	reg := o.withNamespace().Registry
	errs = append(errs, o.Secrets.Validate(), reg.Validate(), o.EDS.Validate(), o.TLS.Validate(), o.Resolver.Validate(), o.Debug.Validate(),
		o.ExportStatus.Validate())
	if o.ExportStatus.Write && !reg.MCS {
		errs = append(errs, errors.New("--mcs-export-status: needs --mcs (ServiceExports are watched only in MCS mode)"))
	}
	return errors.Join(errs...)
}

// DefaultXDSPort is the xDS port when XDSAddress is empty: Istio's plaintext xDS port.
const DefaultXDSPort = "15010"

// XDSListenAddress is where the xDS server listens: XDSAddress, or when it is empty,
// DefaultXDSPort on every interface with TLS and on 127.0.0.1 without.
func (o *Options) XDSListenAddress() string {
	switch {
	case o.XDSAddress != "":
		return o.XDSAddress
	case o.TLS.enabled():
		return ":" + DefaultXDSPort
	default:
		return net.JoinHostPort("127.0.0.1", DefaultXDSPort)
	}
}

// validatePlaintext refuses plaintext xDS on an address that is not a loopback one,
// unless XDSAllowPlaintextRemote. A host name other than localhost is refused too:
// what it resolves to is not known before listening.
func (o *Options) validatePlaintext() error {
	if o.TLS.enabled() || o.XDSAllowPlaintextRemote {
		return nil
	}
	addr := o.XDSListenAddress()
	host, _, err := net.SplitHostPort(addr)
	if err != nil || isLoopbackHost(host) {
		return nil // a malformed address is reported on its own
	}
	return fmt.Errorf("--xds-address %q: plaintext xDS listens only on a loopback address (such as 127.0.0.1:%s); "+
		"serve xDS over TLS (--xds-tls-cert, --xds-tls-key, and --xds-client-ca to authenticate proxies) "+
		"or allow plaintext on this address with --xds-allow-plaintext-remote", cut(addr), DefaultXDSPort)
}

// isLoopbackHost reports whether host, from a host:port address, is a loopback IP
// address or localhost.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// withNamespace returns a copy of o whose components share Secrets' system
// namespace.
func (o Options) withNamespace() Options {
	o.Registry.Namespace = o.Secrets.Namespace
	o.MeshNetworks.Namespace = o.Secrets.Namespace
	o.MeshConfig.Namespace = o.Secrets.Namespace
	return o
}
