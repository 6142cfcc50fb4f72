package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/tlstest"
)

// writeTLSFiles writes a server certificate issued by ca, its key and, when clientCA
// is not nil, a client CA bundle into a new directory, and returns the options naming
// them.
func writeTLSFiles(t *testing.T, ca *tlstest.CA, cn string, clientCA *tlstest.CA) TLSOptions {
	t.Helper()
	f := tlstest.WriteServerFiles(t, ca, cn, clientCA)
	return TLSOptions{CertFile: f.CertFile, KeyFile: f.KeyFile, ClientCAFile: f.ClientCAFile}
}

// startTLSTestServer serves gRPC health checks on 127.0.0.1 with o's credentials,
// logging to logs, until the test ends.
func startTLSTestServer(t *testing.T, o TLSOptions, logs io.Writer) string {
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

func TestXDSTLSHandshake(t *testing.T) {
	ca := tlstest.NewCA(t, "xds-ca")
	other := tlstest.NewCA(t, "other-ca")
	tlsAddr := startTLSTestServer(t, writeTLSFiles(t, ca, "xds-server", nil), io.Discard)
	mtlsAddr := startTLSTestServer(t, writeTLSFiles(t, ca, "xds-server", ca), io.Discard)
	clientCert, clientKey := ca.Issue(t, "proxy", true)
	otherCert, otherKey := other.Issue(t, "proxy", true)

	tests := []struct {
		name    string
		addr    string
		cfg     *tls.Config // nil: plaintext
		wantErr bool
		// wantTLSErr is what ends the TLS handshake; empty if it succeeds.
		wantTLSErr string
	}{
		{"TLS: client trusting the CA", tlsAddr, ca.ClientConfig(t, nil, nil), false, ""},
		{"TLS: client certificate not needed", tlsAddr, ca.ClientConfig(t, clientCert, clientKey), false, ""},
		{"TLS: client not trusting the CA", tlsAddr, other.ClientConfig(t, nil, nil), true, "certificate signed by unknown authority"},
		{"TLS: plaintext client", tlsAddr, nil, true, ""},
		{"mTLS: valid client certificate", mtlsAddr, ca.ClientConfig(t, clientCert, clientKey), false, ""},
		{"mTLS: no client certificate", mtlsAddr, ca.ClientConfig(t, nil, nil), true, "certificate required"},
		{"mTLS: client certificate from another CA", mtlsAddr, ca.ClientConfig(t, otherCert, otherKey), true, "unknown certificate authority"},
		{"mTLS: plaintext client", mtlsAddr, nil, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg != nil {
				tlstest.CheckHandshake(t, tt.addr, tt.cfg, tt.wantTLSErr)
			}
			leaf, err := healthCheck(t, tt.addr, tt.cfg)
			if tt.wantErr {
				tlstest.WantUnavailable(t, err)
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
	ca := tlstest.NewCA(t, "xds-ca")
	o := writeTLSFiles(t, ca, "xds-server-1", ca)
	logs := &kubetest.LogBuffer{}
	addr := startTLSTestServer(t, o, logs)
	clientCert, clientKey := ca.Issue(t, "proxy", true)
	client := ca.ClientConfig(t, clientCert, clientKey)

	served := func() (*x509.Certificate, error) { return healthCheck(t, addr, client) }
	first, err := served()
	if err != nil {
		t.Fatal(err)
	}
	if first.Subject.CommonName != "xds-server-1" {
		t.Fatalf("served %q, want xds-server-1", first.Subject.CommonName)
	}
	var keys [][]byte

	cert2, key2 := ca.Issue(t, "xds-server-2", false)
	keys = append(keys, key2)
	t.Run("rotated certificate and key", func(t *testing.T) {
		tlstest.WriteFileAtomic(t, o.KeyFile, key2)
		tlstest.WriteFileAtomic(t, o.CertFile, cert2)
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
		if err := os.WriteFile(o.CertFile, []byte("-----BEGIN CERTIFICATE-----\nhalf writ"), 0o600); err != nil {
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
		if !strings.Contains(logs.String(), "--xds-tls-cert "+o.CertFile) {
			t.Errorf("reload error does not name the flag and file:\n%s", logs)
		}
	})

	t.Run("rotated client CA", func(t *testing.T) {
		ca2 := tlstest.NewCA(t, "xds-ca-2")
		cert3, key3 := ca.Issue(t, "xds-server-3", false)
		keys = append(keys, key3)
		tlstest.WriteFileAtomic(t, o.KeyFile, key3)
		tlstest.WriteFileAtomic(t, o.CertFile, cert3)
		tlstest.WriteFileAtomic(t, o.ClientCAFile, ca2.PEM)
		client2Cert, client2Key := ca2.Issue(t, "proxy", true)
		client2 := ca.ClientConfig(t, client2Cert, client2Key)
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
		tlstest.WantUnavailable(t, err)
		tlstest.CheckHandshake(t, addr, client, "unknown certificate authority")
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
	ca := tlstest.NewCA(t, "xds-ca")
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
			if err := os.WriteFile(o.CertFile, []byte("not PEM"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "xds-server-1", 1},
		{"same garbage, checked again", func(*testing.T) {}, "xds-server-1", 1},
		{"new certificate with the old key", func(t *testing.T) {
			cert, _ := ca.Issue(t, "xds-server-2", false)
			tlstest.WriteFileAtomic(t, o.CertFile, cert)
		}, "xds-server-1", 2},
		{"its key too", func(t *testing.T) {
			cert, key := ca.Issue(t, "xds-server-3", false)
			tlstest.WriteFileAtomic(t, o.KeyFile, key)
			tlstest.WriteFileAtomic(t, o.CertFile, cert)
		}, "xds-server-3", 2},
		{"key file removed", func(t *testing.T) {
			if err := os.Remove(o.KeyFile); err != nil {
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

func TestXDSTLSPlaintextWarning(t *testing.T) {
	ca := tlstest.NewCA(t, "xds-ca")
	withTLS := writeTLSFiles(t, ca, "xds-server", nil)
	tests := []struct {
		name     string
		o        TLSOptions
		addr     net.IP
		wantWarn bool
	}{
		{"plaintext on every IPv6 and IPv4 interface", TLSOptions{}, net.IPv6unspecified, true},
		{"plaintext on every IPv4 interface", TLSOptions{}, net.IPv4zero, true},
		{"plaintext on a pod IP", TLSOptions{}, net.ParseIP("10.1.2.3"), true},
		{"plaintext on IPv4 loopback", TLSOptions{}, net.IPv4(127, 0, 0, 1), false},
		{"plaintext on IPv6 loopback", TLSOptions{}, net.IPv6loopback, false},
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
