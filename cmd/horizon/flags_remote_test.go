package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestRemoteAndDNSBoundFlags: the bounds on remote Secrets and gateway DNS names are
// flags of serve, with help text, and bad values are usage errors naming the flag.
func TestRemoteAndDNSBoundFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--remote-max-clusters=-1"}, "--remote-max-clusters: must not be negative"},
		{[]string{"serve", "--remote-secrets-namespace=Not_A_Namespace"}, `--remote-secrets-namespace "Not_A_Namespace"`},
		{[]string{"serve", "--gateway-dns-refresh-interval=1s"}, "--gateway-dns-refresh-interval: must be at least 30s, got 1s"},
		{[]string{"serve", "--gateway-dns-concurrency=-1"}, "--gateway-dns-concurrency: must not be negative"},
		{[]string{"serve", "--gateway-dns-max-names=-1"}, "--gateway-dns-max-names: must not be negative"},
		{[]string{"serve", "--gateway-dns-max-addresses=-1"}, "--gateway-dns-max-addresses: must not be negative"},
		{[]string{"serve", "--credential-expiry-warning=-1h"}, "--credential-expiry-warning -1h0m0s: must be between 0 and"},
		{[]string{"serve", "--credential-expiry-warning=9000h"}, "--credential-expiry-warning 9000h0m0s: must be between 0 and"},
	} {
		var out bytes.Buffer
		err := run(t.Context(), tt.args, &out, &out)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want a usage error containing %q", tt.args, err, tt.want)
		}
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"serve", "--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--remote-max-clusters", "--remote-secrets-namespace", "--remote-refuse-loopback",
		"--gateway-dns-refresh-interval", "--gateway-dns-concurrency", "--gateway-dns-max-names", "--gateway-dns-max-addresses", "--credential-expiry-warning"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("serve --help does not mention %s", flag)
		}
	}
}
