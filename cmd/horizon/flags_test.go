package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestBadFlagsAreUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "a command is required"},
		{"unknown command", []string{"fly"}, `unknown command "fly"`},
		{"unknown flag", []string{"serve", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{"negative debounce", []string{"serve", "--debounce-after=-1s"}, "--debounce-after: must not be negative"},
		{"debounce max below after", []string{"serve", "--debounce-after=2s", "--debounce-max=1s"}, "--debounce-max: must be at least --debounce-after"},
		{"bad duration", []string{"serve", "--remote-cluster-timeout=soon"}, `invalid argument "soon"`},
		{"negative timeout", []string{"serve", "--remote-cluster-timeout=-5s"}, "--remote-cluster-timeout: must not be negative"},
		{"negative client rate limit", []string{"serve", "--remote-qps=-1"}, "--remote-qps: must not be negative"},
		{"bad address", []string{"serve", "--xds-address=15010"}, "--xds-address: address 15010: missing port in address"},
		{"plaintext xDS on every interface", []string{"serve", "--xds-address=:15010"},
			`--xds-address ":15010": plaintext xDS listens only on a loopback address (such as 127.0.0.1:15010); serve xDS over TLS (--xds-tls-cert, --xds-tls-key, and --xds-client-ca to authenticate proxies) or allow plaintext on this address with --xds-allow-plaintext-remote`},
		{"bad trust domain", []string{"serve", "--trust-domain=Cluster.Local"}, `--trust-domain: "Cluster.Local": only lowercase letters, digits, '.', '-' and '_' are allowed`},
		{"empty trust domain", []string{"serve", "--trust-domain="}, "--trust-domain: must not be empty"},
		{"bad log level", []string{"serve", "--log-level=loud"}, "--log-level"},
		{"empty namespace", []string{"serve", "--namespace="}, "--namespace: must not be empty"},
		{"empty cluster ID", []string{"serve", "--cluster-id="}, "--cluster-id: must not be empty"},
		{"stray argument", []string{"serve", "extra"}, "unexpected arguments"},
		{"too many namespace watches", []string{"serve", "--discovery-max-namespace-watches=10001"}, "--discovery-max-namespace-watches: must be 0-10000, got 10001"},
		{"bad debug access", []string{"serve", "--debug-access=anyone"}, `--debug-access: must be loopback-or-token, loopback or token, got "anyone"`},
		{"bad traffic distribution", []string{"serve", "--traffic-distribution=Nearby"}, `--traffic-distribution: must be empty, PreferClose, PreferSameZone or PreferSameNode, got "Nearby"`},
		{"bad debug audience", []string{"serve", "--debug-token-audience=a,b"}, "--debug-token-audience: must be one audience"},
		{"export status without MCS", []string{"serve", "--mcs-export-status"}, "--mcs-export-status: needs --mcs"},
		{"export status rate", []string{"serve", "--mcs", "--mcs-export-status-qps=0"}, "--mcs-export-status-qps: must be more than 0"},
		{"export status burst", []string{"serve", "--mcs", "--mcs-export-status-burst=0"}, "--mcs-export-status-burst: must be 1-10000"},
		{"status token and token file", []string{"status", "--token=x", "--token-file=/dev/null"}, "--token and --token-file: give one or the other"},
		{"status empty token file", []string{"status", "--token-file=/dev/null"}, "--token-file: /dev/null holds no token"},
		{"status missing token file", []string{"status", "--token-file=/nonexistent/token"}, "--token-file: open /nonexistent/token"},
		{"missing kubeconfig file", []string{"serve", "--kubeconfig=/nonexistent/kubeconfig"}, "load --kubeconfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(t.Context(), tt.args, &out, &out)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v (%T), want a usage error (exit 2)", err, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "horizon serve") {
		t.Fatalf("help = %q", out.String())
	}
	out.Reset()
	if err := run(t.Context(), []string{"serve", "--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--kubeconfig", "--context", "--cluster-id", "--namespace", "--mesh-networks", "--mesh-config", "--discovery-max-namespace-watches", "--domain-suffix",
		"--xds-address", "--http-address", "--debounce-after", "--debounce-max", "--remote-cluster-timeout",
		"--stale-cluster-grace", "--remote-qps", "--remote-burst", "--remote-initial-sync-parallelism", "--xds-tls-cert", "--xds-tls-key", "--xds-client-ca", "--xds-allow-plaintext-remote", "--trust-domain", "--pprof", "--default-passthrough", "--proxyless-mtls",
		"--debug-access", "--debug-token-audience", "--traffic-distribution", "--mcs"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("serve --help does not mention %s", flag)
		}
	}
}
