package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/horizon-mesh/horizon/cmd/horizon/app"
)

// serveOptions is everything `horizon serve` takes from its flags: where the config
// cluster's credentials come from and how to log, and what shapes Horizon.
type serveOptions struct {
	kubeconfig string
	context    string
	logLevel   string
	app        app.Options
}

func (o *serveOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the config cluster (empty: in-cluster config)")
	fs.StringVar(&o.context, "context", "", "kubeconfig context of the config cluster (empty: current context)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	o.app.AddFlags(fs)
}

func (o *serveOptions) validate() error {
	var errs []error
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	errs = append(errs, o.app.Validate())
	return errors.Join(errs...)
}

// serve runs Horizon, as the flags say, until ctx is done.
func serve(ctx context.Context, args []string, stderr io.Writer) error {
	var o serveOptions
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	o.addFlags(fs)
	if ok, err := parseFlags(fs, args); !ok {
		return err
	}
	if err := o.validate(); err != nil {
		return usageError{err}
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(o.logLevel))
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	klog.SetSlogLogger(logger.With("component", "client-go"))

	cfg, err := configClusterConfig(o.kubeconfig, o.context)
	if err != nil {
		return usageError{err}
	}
	h, err := app.New(o.app, cfg, logger)
	if err != nil {
		return err
	}
	return h.Run(ctx)
}

// configClusterConfig loads the config cluster's client config: a kubeconfig file and
// context, or the in-cluster config when no kubeconfig is given.
func configClusterConfig(kubeconfig, kctx string) (*rest.Config, error) {
	if kubeconfig == "" && kctx == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig given and not running in a cluster: %w", err)
		}
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kctx}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load --kubeconfig %q (context %q): %w", kubeconfig, kctx, err)
	}
	return cfg, nil
}
