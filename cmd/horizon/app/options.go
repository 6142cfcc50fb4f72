package app

import (
	"errors"
	"fmt"
	"net"

	"github.com/spf13/pflag"

	"github.com/horizon-mesh/horizon/clusterregistry"
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
	// XDSAddress is where the xDS (ADS) gRPC server listens.
	XDSAddress string
	// HTTPAddress is where /healthz, /readyz, /metrics and /debug/ are served.
	HTTPAddress string
	// Pprof serves net/http/pprof under /debug/pprof/ on HTTPAddress.
	Pprof bool

	// Secrets holds the system namespace (--namespace) and the config cluster's ID
	// (--cluster-id).
	Secrets  secrets.Options
	Registry clusterregistry.Options
	EDS      eds.Options
	// MeshNetworks.File is --mesh-networks; empty: the meshNetworks key of ConfigMap
	// istio in the system namespace.
	MeshNetworks meshsource.Options
	Gateways     gatewaysource.Options
	// Resolver bounds the background DNS resolution of gateway names.
	Resolver network.ResolverOptions
	// TLS configures the xDS server's TLS; plaintext by default.
	TLS TLSOptions
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
	fs.StringVar(&o.XDSAddress, "xds-address", ":15010", "address of the xDS (ADS) gRPC server")
	fs.StringVar(&o.HTTPAddress, "http-address", ":15014", "address of the HTTP server (/healthz, /readyz)")
	fs.BoolVar(&o.Pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on --http-address")
	o.Secrets.AddFlags(fs)
	o.Registry.AddFlags(fs)
	o.EDS.AddFlags(fs)
	o.Resolver.AddFlags(fs)
	o.TLS.AddFlags(fs)
}

// Validate checks the values that come from flags; New also checks the wiring.
func (o *Options) Validate() error {
	var errs []error
	for _, a := range []struct{ flag, addr string }{{"--xds-address", o.XDSAddress}, {"--http-address", o.HTTPAddress}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.flag, err))
		}
	}
	reg := o.withNamespace().Registry
	errs = append(errs, o.Secrets.Validate(), reg.Validate(), o.EDS.Validate(), o.TLS.Validate(), o.Resolver.Validate())
	return errors.Join(errs...)
}

// withNamespace returns a copy of o whose components share Secrets' system
// namespace.
func (o Options) withNamespace() Options {
	o.Registry.Namespace = o.Secrets.Namespace
	o.MeshNetworks.Namespace = o.Secrets.Namespace
	return o
}
