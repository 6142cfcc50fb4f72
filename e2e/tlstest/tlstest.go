// Package tlstest holds TLS helpers for tests: a certificate authority issuing server
// and client certificates, server files written the way a rotation writes them, and
// checks of how a TLS or gRPC connection ended. Every helper fails the test it is
// given on an unexpected error.
package tlstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
)

// CA is a certificate authority that issues the certificates of a TLS test.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is Cert, PEM-encoded: a CA bundle.
	PEM []byte
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// NewCA returns a new CA named name, valid for an hour.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
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
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Issue returns a PEM certificate and key signed by ca: a server certificate for
// 127.0.0.1 and localhost, or a client certificate.
func (ca *CA) Issue(t testing.TB, cn string, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	return ca.issue(t, cn, client, nil)
}

// IssueClient returns a PEM client certificate and key signed by ca whose URI SANs
// are uris, such as a workload's SPIFFE ID spiffe://<trust domain>/ns/<ns>/sa/<sa>.
func (ca *CA) IssueClient(t testing.TB, cn string, uris ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	var parsed []*url.URL
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, p)
	}
	return ca.issue(t, cn, true, parsed)
}

func (ca *CA) issue(t testing.TB, cn string, client bool, uris []*url.URL) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
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
	tmpl.URIs = uris
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
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

// ClientConfig returns a client TLS configuration that trusts ca and presents the
// given certificate, if any, whichever CAs the server asks for, as proxies do.
func (ca *CA) ClientConfig(t testing.TB, certPEM, keyPEM []byte) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
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

// WriteFileAtomic replaces path with data the way a rotation should: it writes a
// temporary file next to it and renames it over path.
func WriteFileAtomic(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// ServerFiles are the PEM files of a TLS server.
type ServerFiles struct {
	CertFile, KeyFile string
	// ClientCAFile is empty when client certificates are not required.
	ClientCAFile string
}

// WriteServerFiles writes a server certificate issued by ca, its key and, when
// clientCA is not nil, a client CA bundle into a new directory, and returns their
// paths.
func WriteServerFiles(t testing.TB, ca *CA, cn string, clientCA *CA) ServerFiles {
	t.Helper()
	dir := t.TempDir()
	f := ServerFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	certPEM, keyPEM := ca.Issue(t, cn, false)
	WriteFileAtomic(t, f.KeyFile, keyPEM)
	WriteFileAtomic(t, f.CertFile, certPEM)
	if clientCA != nil {
		f.ClientCAFile = filepath.Join(dir, "client-ca.crt")
		WriteFileAtomic(t, f.ClientCAFile, clientCA.PEM)
	}
	return f
}

// WantUnavailable fails the test unless err is a gRPC call that failed because no
// connection could be established.
func WantUnavailable(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("call succeeded, want it refused")
	}
	if grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want code Unavailable", err)
	}
}

// Handshake makes a TLS connection to the gRPC server at addr and reads the server's
// first bytes, returning the error that refused the connection, if any. In TLS 1.3
// the server verifies the client certificate after the client has finished its half
// of the handshake, so that refusal arrives as an alert on the first read.
func Handshake(t testing.TB, addr string, cfg *tls.Config) error {
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

// CheckHandshake fails the test unless a TLS handshake with cfg fails with an error
// containing want, or succeeds if want is empty.
func CheckHandshake(t testing.TB, addr string, cfg *tls.Config, want string) {
	t.Helper()
	err := Handshake(t, addr, cfg)
	switch {
	case want == "" && err != nil:
		t.Fatalf("TLS handshake: %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("TLS handshake: err = %v, want it to contain %q", err, want)
	}
}
