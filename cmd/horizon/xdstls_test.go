package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/tlstest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
)

// writeTLSFiles writes a server certificate issued by ca, its key and, when clientCA
// is not nil, a client CA bundle into a new directory, and returns the options naming
// them.
func writeTLSFiles(t *testing.T, ca *tlstest.CA, cn string, clientCA *tlstest.CA) app.TLSOptions {
	t.Helper()
	f := tlstest.WriteServerFiles(t, ca, cn, clientCA)
	return app.TLSOptions{CertFile: f.CertFile, KeyFile: f.KeyFile, ClientCAFile: f.ClientCAFile}
}

// TestXDSTLSFlags checks the xDS TLS flags on their own and through `horizon serve`.
// The TLS server itself (handshakes, reloads, the plaintext warning) is tested in
// package app.
func TestXDSTLSFlags(t *testing.T) {
	ca := tlstest.NewCA(t, "xds-ca")
	good := writeTLSFiles(t, ca, "xds-server", ca)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherKey := writeTLSFiles(t, ca, "other", nil).KeyFile
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name string
		args []string
		want string // empty: valid
	}{
		{"plaintext", nil, ""},
		{"TLS", []string{"--xds-tls-cert", good.CertFile, "--xds-tls-key", good.KeyFile}, ""},
		{"mutual TLS", []string{"--xds-tls-cert", good.CertFile, "--xds-tls-key", good.KeyFile, "--xds-client-ca", good.ClientCAFile}, ""},
		{"cert without key", []string{"--xds-tls-cert", good.CertFile}, "--xds-tls-cert: requires --xds-tls-key"},
		{"key without cert", []string{"--xds-tls-key", good.KeyFile}, "--xds-tls-key: requires --xds-tls-cert"},
		{"client CA without cert", []string{"--xds-client-ca", good.ClientCAFile}, "--xds-client-ca: requires --xds-tls-cert and --xds-tls-key"},
		{"missing cert file", []string{"--xds-tls-cert", missing, "--xds-tls-key", good.KeyFile}, "--xds-tls-cert: open " + missing + ": no such file"},
		{"missing key file", []string{"--xds-tls-cert", good.CertFile, "--xds-tls-key", missing}, "--xds-tls-key: open " + missing + ": no such file"},
		{"missing client CA file", []string{"--xds-tls-cert", good.CertFile, "--xds-tls-key", good.KeyFile, "--xds-client-ca", missing}, "--xds-client-ca: open " + missing},
		{"cert not PEM", []string{"--xds-tls-cert", garbage, "--xds-tls-key", good.KeyFile}, "--xds-tls-cert " + garbage + ": no PEM CERTIFICATE block found"},
		{"key not PEM", []string{"--xds-tls-cert", good.CertFile, "--xds-tls-key", garbage}, "--xds-tls-key " + garbage + ": tls: failed to find any PEM data in key input"},
		{"key given as cert", []string{"--xds-tls-cert", good.KeyFile, "--xds-tls-key", good.KeyFile}, "--xds-tls-cert " + good.KeyFile + ": no PEM CERTIFICATE block found"},
		{"key of another cert", []string{"--xds-tls-cert", good.CertFile, "--xds-tls-key", otherKey}, "--xds-tls-key " + otherKey + ": tls: private key does not match public key"},
		{"client CA not PEM", []string{"--xds-tls-cert", good.CertFile, "--xds-tls-key", good.KeyFile, "--xds-client-ca", garbage}, "--xds-client-ca " + garbage + ": no PEM CERTIFICATE block found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o app.TLSOptions
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			// Through the command: a usage error, so exit status 2.
			err = run(t.Context(), append([]string{"serve"}, tt.args...), io.Discard, io.Discard)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("horizon serve: err = %v (%T), want a usage error containing %q", err, err, tt.want)
			}
		})
	}
}

// adsResponse opens an ADS stream to addr with the given transport credentials, asks
// for clusters as a sidecar and returns the first response.
func adsResponse(t *testing.T, addr string, creds credentials.TransportCredentials) (*discoveryv3.DiscoveryResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	req := &discoveryv3.DiscoveryRequest{
		Node:    &corev3.Node{Id: "sidecar~1.2.3.4~a.b~b.svc.cluster.local"},
		TypeUrl: xdstest.TypeCluster,
	}
	if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// On io.EOF the stream failed; Recv returns why.
	return stream.Recv()
}

// TestServeXDSTLS runs `horizon serve` with mutual TLS on xDS and checks that a proxy
// with a valid client certificate carrying its SPIFFE ID gets its configuration and
// others are refused. The trust domain is not the default one.
func TestServeXDSTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh-ca")
	o := writeTLSFiles(t, ca, "horizon", ca)
	xdsAddr, _, logs := startServe(t, "--xds-tls-cert", o.CertFile, "--xds-tls-key", o.KeyFile, "--xds-client-ca", o.ClientCAFile,
		"--trust-domain", "mesh.example")
	// adsResponse's node is in namespace b.
	proxyCert, proxyKey := ca.IssueClient(t, "sidecar", "spiffe://mesh.example/ns/b/sa/default")
	proxy := ca.ClientConfig(t, proxyCert, proxyKey)
	anonCert, anonKey := ca.Issue(t, "sidecar", true)
	otherNSCert, otherNSKey := ca.IssueClient(t, "sidecar", "spiffe://mesh.example/ns/c/sa/default")
	defaultTDCert, defaultTDKey := ca.IssueClient(t, "sidecar", "spiffe://cluster.local/ns/b/sa/default")

	tests := []struct {
		name string
		cfg  *tls.Config // nil: plaintext
		// wantCode is the call's status code; OK if it is served.
		wantCode codes.Code
		// wantTLSErr is what ends the TLS handshake; empty if it succeeds.
		wantTLSErr string
	}{
		{"proxy with its SPIFFE ID", proxy, codes.OK, ""},
		{"plaintext proxy", nil, codes.Unavailable, ""},
		{"proxy without a client certificate", ca.ClientConfig(t, nil, nil), codes.Unavailable, "certificate required"},
		{"client certificate without a SPIFFE ID", ca.ClientConfig(t, anonCert, anonKey), codes.PermissionDenied, ""},
		{"SPIFFE ID of another namespace", ca.ClientConfig(t, otherNSCert, otherNSKey), codes.PermissionDenied, ""},
		{"SPIFFE ID of the default trust domain", ca.ClientConfig(t, defaultTDCert, defaultTDKey), codes.PermissionDenied, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds := insecure.NewCredentials()
			if tt.cfg != nil {
				tlstest.CheckHandshake(t, xdsAddr, tt.cfg, tt.wantTLSErr)
				creds = credentials.NewTLS(tt.cfg)
			}
			resp, err := adsResponse(t, xdsAddr, creds)
			if tt.wantCode == codes.Unavailable {
				tlstest.WantUnavailable(t, err)
				return
			}
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("err = %v, want code %s", err, tt.wantCode)
			}
			if tt.wantCode != codes.OK {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetTypeUrl() != xdstest.TypeCluster {
				t.Fatalf("response of type %q, want %q", resp.GetTypeUrl(), xdstest.TypeCluster)
			}
		})
	}
	if out := logs.String(); !strings.Contains(out, "xDS served over TLS") || strings.Contains(out, "xDS is served in plaintext") {
		t.Fatalf("startup log does not say xDS is served over TLS:\n%s", out)
	}
}
