package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/spf13/pflag"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
)

// tlsTestCA is a certificate authority that issues the certificates of a TLS test.
type tlsTestCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func tlsTestSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newTLSTestCA(t *testing.T, name string) *tlsTestCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          tlsTestSerial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tlsTestCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key signed by ca: a server certificate for
// 127.0.0.1 and localhost, or a client certificate.
func (ca *tlsTestCA) issue(t *testing.T, cn string, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: tlsTestSerial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses, tmpl.DNSNames = nil, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// clientConfig returns a client TLS configuration that trusts ca and presents the
// given certificate, if any, whichever CAs the server asks for, as proxies do.
func (ca *tlsTestCA) clientConfig(t *testing.T, certPEM, keyPEM []byte) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	cfg := &tls.Config{RootCAs: roots}
	if certPEM != nil {
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return cfg
}

// writeFileAtomic replaces path with data the way a rotation should: it writes a
// temporary file next to it and renames it over path.
func writeFileAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writeTLSFiles writes a server certificate issued by ca, its key and, when clientCA
// is not nil, a client CA bundle into a new directory, and returns the options naming
// them.
func writeTLSFiles(t *testing.T, ca *tlsTestCA, cn string, clientCA *tlsTestCA) xdsTLSOptions {
	t.Helper()
	dir := t.TempDir()
	o := xdsTLSOptions{certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key")}
	certPEM, keyPEM := ca.issue(t, cn, false)
	writeFileAtomic(t, o.keyFile, keyPEM)
	writeFileAtomic(t, o.certFile, certPEM)
	if clientCA != nil {
		o.clientCAFile = filepath.Join(dir, "client-ca.crt")
		writeFileAtomic(t, o.clientCAFile, clientCA.pem)
	}
	return o
}

// startTLSTestServer serves gRPC health checks on 127.0.0.1 with o's credentials,
// logging to logs, until the test ends.
func startTLSTestServer(t *testing.T, o xdsTLSOptions, logs io.Writer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opt, err := o.serverOption(slog.New(slog.NewTextHandler(logs, nil)), lis.Addr())
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	g := grpc.NewServer(opt)
	healthpb.RegisterHealthServer(g, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return lis.Addr().String()
}

// healthCheck calls the health service at addr on a new connection with the given
// client TLS configuration (plaintext if nil) and returns the certificate the server
// presented.
func healthCheck(t *testing.T, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, fmt.Errorf("no TLS peer certificate (auth info %T)", p.AuthInfo)
	}
	return info.State.PeerCertificates[0], nil
}

// wantUnavailable fails the test unless err is a call that failed because no
// connection could be established.
func wantUnavailable(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("call succeeded, want it refused")
	}
	if grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want code Unavailable", err)
	}
}

// handshake makes a TLS connection to the gRPC server at addr and reads the server's
// first bytes, returning the error that refused the connection, if any. In TLS 1.3
// the server verifies the client certificate after the client has finished its half
// of the handshake, so that refusal arrives as an alert on the first read.
func handshake(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	// A gRPC server starts with its HTTP/2 SETTINGS frame.
	_, err = conn.Read(make([]byte, 1))
	return err
}

// checkHandshake fails the test unless a TLS handshake with cfg fails with an error
// containing want, or succeeds if want is empty.
func checkHandshake(t *testing.T, addr string, cfg *tls.Config, want string) {
	t.Helper()
	err := handshake(t, addr, cfg)
	switch {
	case want == "" && err != nil:
		t.Fatalf("TLS handshake: %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("TLS handshake: err = %v, want it to contain %q", err, want)
	}
}

func TestXDSTLSHandshake(t *testing.T) {
	ca := newTLSTestCA(t, "xds-ca")
	other := newTLSTestCA(t, "other-ca")
	tlsAddr := startTLSTestServer(t, writeTLSFiles(t, ca, "xds-server", nil), io.Discard)
	mtlsAddr := startTLSTestServer(t, writeTLSFiles(t, ca, "xds-server", ca), io.Discard)
	clientCert, clientKey := ca.issue(t, "proxy", true)
	otherCert, otherKey := other.issue(t, "proxy", true)

	tests := []struct {
		name    string
		addr    string
		cfg     *tls.Config // nil: plaintext
		wantErr bool
		// wantTLSErr is what ends the TLS handshake; empty if it succeeds.
		wantTLSErr string
	}{
		{"TLS: client trusting the CA", tlsAddr, ca.clientConfig(t, nil, nil), false, ""},
		{"TLS: client certificate not needed", tlsAddr, ca.clientConfig(t, clientCert, clientKey), false, ""},
		{"TLS: client not trusting the CA", tlsAddr, other.clientConfig(t, nil, nil), true, "certificate signed by unknown authority"},
		{"TLS: plaintext client", tlsAddr, nil, true, ""},
		{"mTLS: valid client certificate", mtlsAddr, ca.clientConfig(t, clientCert, clientKey), false, ""},
		{"mTLS: no client certificate", mtlsAddr, ca.clientConfig(t, nil, nil), true, "certificate required"},
		{"mTLS: client certificate from another CA", mtlsAddr, ca.clientConfig(t, otherCert, otherKey), true, "unknown certificate authority"},
		{"mTLS: plaintext client", mtlsAddr, nil, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg != nil {
				checkHandshake(t, tt.addr, tt.cfg, tt.wantTLSErr)
			}
			leaf, err := healthCheck(t, tt.addr, tt.cfg)
			if tt.wantErr {
				wantUnavailable(t, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if leaf.Subject.CommonName != "xds-server" {
				t.Fatalf("served certificate %q, want xds-server", leaf.Subject.CommonName)
			}
		})
	}
}

// TestXDSTLSReload rotates the server certificate, the key and the client CA under a
// running server by renaming new files over them, and checks that new
// connections pick them up, and that a broken file keeps the last good version.
func TestXDSTLSReload(t *testing.T) {
	ca := newTLSTestCA(t, "xds-ca")
	o := writeTLSFiles(t, ca, "xds-server-1", ca)
	logs := &kubetest.LogBuffer{}
	addr := startTLSTestServer(t, o, logs)
	clientCert, clientKey := ca.issue(t, "proxy", true)
	client := ca.clientConfig(t, clientCert, clientKey)

	served := func() (*x509.Certificate, error) { return healthCheck(t, addr, client) }
	first, err := served()
	if err != nil {
		t.Fatal(err)
	}
	if first.Subject.CommonName != "xds-server-1" {
		t.Fatalf("served %q, want xds-server-1", first.Subject.CommonName)
	}
	var keys [][]byte

	cert2, key2 := ca.issue(t, "xds-server-2", false)
	keys = append(keys, key2)
	t.Run("rotated certificate and key", func(t *testing.T) {
		writeFileAtomic(t, o.keyFile, key2)
		writeFileAtomic(t, o.certFile, cert2)
		kubetest.Eventually(t, 10*time.Second, func() error {
			leaf, err := served()
			if err != nil {
				return err
			}
			if leaf.SerialNumber.Cmp(first.SerialNumber) == 0 || leaf.Subject.CommonName != "xds-server-2" {
				return fmt.Errorf("still serving %q (serial %s)", leaf.Subject.CommonName, leaf.SerialNumber)
			}
			return nil
		})
	})

	t.Run("garbage certificate keeps the last good one", func(t *testing.T) {
		if err := os.WriteFile(o.certFile, []byte("-----BEGIN CERTIFICATE-----\nhalf writ"), 0o600); err != nil {
			t.Fatal(err)
		}
		kubetest.Eventually(t, 10*time.Second, func() error {
			if _, err := served(); err != nil {
				return err
			}
			if !strings.Contains(logs.String(), "reload xDS TLS files failed") {
				return errors.New("failed reload not logged")
			}
			return nil
		})
		leaf, err := served()
		if err != nil {
			t.Fatal(err)
		}
		if leaf.Subject.CommonName != "xds-server-2" {
			t.Fatalf("served %q after a bad write, want xds-server-2", leaf.Subject.CommonName)
		}
		if !strings.Contains(logs.String(), "--xds-tls-cert "+o.certFile) {
			t.Errorf("reload error does not name the flag and file:\n%s", logs)
		}
	})

	t.Run("rotated client CA", func(t *testing.T) {
		ca2 := newTLSTestCA(t, "xds-ca-2")
		cert3, key3 := ca.issue(t, "xds-server-3", false)
		keys = append(keys, key3)
		writeFileAtomic(t, o.keyFile, key3)
		writeFileAtomic(t, o.certFile, cert3)
		writeFileAtomic(t, o.clientCAFile, ca2.pem)
		client2Cert, client2Key := ca2.issue(t, "proxy", true)
		client2 := ca.clientConfig(t, client2Cert, client2Key)
		kubetest.Eventually(t, 10*time.Second, func() error {
			leaf, err := healthCheck(t, addr, client2)
			if err != nil {
				return err
			}
			if leaf.Subject.CommonName != "xds-server-3" {
				return fmt.Errorf("still serving %q", leaf.Subject.CommonName)
			}
			return nil
		})
		_, err := served()
		wantUnavailable(t, err)
		checkHandshake(t, addr, client, "unknown certificate authority")
	})

	for _, k := range keys {
		body := strings.Split(string(k), "\n")[1]
		if strings.Contains(logs.String(), body) || strings.Contains(logs.String(), "PRIVATE KEY") {
			t.Fatalf("key material logged:\n%s", logs)
		}
	}
}

// TestXDSTLSReloadLogsOncePerBadVersion drives the reloader directly, checking the
// files on every handshake.
func TestXDSTLSReloadLogsOncePerBadVersion(t *testing.T) {
	ca := newTLSTestCA(t, "xds-ca")
	o := writeTLSFiles(t, ca, "xds-server-1", nil)
	var logs bytes.Buffer
	r, err := newTLSReloader(o, slog.New(slog.NewTextHandler(&logs, nil)), 0)
	if err != nil {
		t.Fatal(err)
	}
	cn := func() string { return r.current().cert.Leaf.Subject.CommonName }
	failures := func() int { return strings.Count(logs.String(), "reload xDS TLS files failed") }

	steps := []struct {
		name         string
		change       func(t *testing.T)
		wantCN       string
		wantFailures int
	}{
		{"unchanged", func(*testing.T) {}, "xds-server-1", 0},
		{"garbage certificate", func(t *testing.T) {
			if err := os.WriteFile(o.certFile, []byte("not PEM"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "xds-server-1", 1},
		{"same garbage, checked again", func(*testing.T) {}, "xds-server-1", 1},
		{"new certificate with the old key", func(t *testing.T) {
			cert, _ := ca.issue(t, "xds-server-2", false)
			writeFileAtomic(t, o.certFile, cert)
		}, "xds-server-1", 2},
		{"its key too", func(t *testing.T) {
			cert, key := ca.issue(t, "xds-server-3", false)
			writeFileAtomic(t, o.keyFile, key)
			writeFileAtomic(t, o.certFile, cert)
		}, "xds-server-3", 2},
		{"key file removed", func(t *testing.T) {
			if err := os.Remove(o.keyFile); err != nil {
				t.Fatal(err)
			}
		}, "xds-server-3", 3},
		{"still removed", func(*testing.T) {}, "xds-server-3", 3},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.change(t)
			for range 3 {
				if got := cn(); got != s.wantCN {
					t.Fatalf("serving %q, want %q", got, s.wantCN)
				}
			}
			if got := failures(); got != s.wantFailures {
				t.Fatalf("%d failed reloads logged, want %d:\n%s", got, s.wantFailures, logs.String())
			}
		})
	}
}

func TestXDSTLSFlags(t *testing.T) {
	ca := newTLSTestCA(t, "xds-ca")
	good := writeTLSFiles(t, ca, "xds-server", ca)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherKey := writeTLSFiles(t, ca, "other", nil).keyFile
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name string
		args []string
		want string // empty: valid
	}{
		{"plaintext", nil, ""},
		{"TLS", []string{"--xds-tls-cert", good.certFile, "--xds-tls-key", good.keyFile}, ""},
		{"mutual TLS", []string{"--xds-tls-cert", good.certFile, "--xds-tls-key", good.keyFile, "--xds-client-ca", good.clientCAFile}, ""},
		{"cert without key", []string{"--xds-tls-cert", good.certFile}, "--xds-tls-cert: requires --xds-tls-key"},
		{"key without cert", []string{"--xds-tls-key", good.keyFile}, "--xds-tls-key: requires --xds-tls-cert"},
		{"client CA without cert", []string{"--xds-client-ca", good.clientCAFile}, "--xds-client-ca: requires --xds-tls-cert and --xds-tls-key"},
		{"missing cert file", []string{"--xds-tls-cert", missing, "--xds-tls-key", good.keyFile}, "--xds-tls-cert: open " + missing + ": no such file"},
		{"missing key file", []string{"--xds-tls-cert", good.certFile, "--xds-tls-key", missing}, "--xds-tls-key: open " + missing + ": no such file"},
		{"missing client CA file", []string{"--xds-tls-cert", good.certFile, "--xds-tls-key", good.keyFile, "--xds-client-ca", missing}, "--xds-client-ca: open " + missing},
		{"cert not PEM", []string{"--xds-tls-cert", garbage, "--xds-tls-key", good.keyFile}, "--xds-tls-cert " + garbage + ": no PEM CERTIFICATE block found"},
		{"key not PEM", []string{"--xds-tls-cert", good.certFile, "--xds-tls-key", garbage}, "--xds-tls-key " + garbage + ": tls: failed to find any PEM data in key input"},
		{"key given as cert", []string{"--xds-tls-cert", good.keyFile, "--xds-tls-key", good.keyFile}, "--xds-tls-cert " + good.keyFile + ": no PEM CERTIFICATE block found"},
		{"key of another cert", []string{"--xds-tls-cert", good.certFile, "--xds-tls-key", otherKey}, "--xds-tls-key " + otherKey + ": tls: private key does not match public key"},
		{"client CA not PEM", []string{"--xds-tls-cert", good.certFile, "--xds-tls-key", good.keyFile, "--xds-client-ca", garbage}, "--xds-client-ca " + garbage + ": no PEM CERTIFICATE block found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o xdsTLSOptions
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			o.addFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := o.validate()
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

func TestXDSTLSPlaintextWarning(t *testing.T) {
	ca := newTLSTestCA(t, "xds-ca")
	withTLS := writeTLSFiles(t, ca, "xds-server", nil)
	tests := []struct {
		name     string
		o        xdsTLSOptions
		addr     net.IP
		wantWarn bool
	}{
		{"plaintext on every IPv6 and IPv4 interface", xdsTLSOptions{}, net.IPv6unspecified, true},
		{"plaintext on every IPv4 interface", xdsTLSOptions{}, net.IPv4zero, true},
		{"plaintext on a pod IP", xdsTLSOptions{}, net.ParseIP("10.1.2.3"), true},
		{"plaintext on IPv4 loopback", xdsTLSOptions{}, net.IPv4(127, 0, 0, 1), false},
		{"plaintext on IPv6 loopback", xdsTLSOptions{}, net.IPv6loopback, false},
		{"TLS on every interface", withTLS, net.IPv6unspecified, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			if _, err := tt.o.serverOption(slog.New(slog.NewTextHandler(&logs, nil)), &net.TCPAddr{IP: tt.addr, Port: 15010}); err != nil {
				t.Fatal(err)
			}
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "--xds-tls-cert and --xds-tls-key")
			if warned != tt.wantWarn {
				t.Fatalf("plaintext warning logged: %v, want %v:\n%s", warned, tt.wantWarn, logs.String())
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
// with a valid client certificate gets its configuration and others are refused.
func TestServeXDSTLS(t *testing.T) {
	ca := newTLSTestCA(t, "mesh-ca")
	o := writeTLSFiles(t, ca, "horizon", ca)
	xdsAddr, _, logs := startServe(t, "--xds-tls-cert", o.certFile, "--xds-tls-key", o.keyFile, "--xds-client-ca", o.clientCAFile)
	proxyCert, proxyKey := ca.issue(t, "sidecar", true)
	proxy := ca.clientConfig(t, proxyCert, proxyKey)

	tests := []struct {
		name    string
		cfg     *tls.Config // nil: plaintext
		wantErr bool
		// wantTLSErr is what ends the TLS handshake; empty if it succeeds.
		wantTLSErr string
	}{
		{"proxy with a client certificate", proxy, false, ""},
		{"plaintext proxy", nil, true, ""},
		{"proxy without a client certificate", ca.clientConfig(t, nil, nil), true, "certificate required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds := insecure.NewCredentials()
			if tt.cfg != nil {
				checkHandshake(t, xdsAddr, tt.cfg, tt.wantTLSErr)
				creds = credentials.NewTLS(tt.cfg)
			}
			resp, err := adsResponse(t, xdsAddr, creds)
			if tt.wantErr {
				wantUnavailable(t, err)
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
