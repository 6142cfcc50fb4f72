package app

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// tlsReloadInterval is how often, at most, the TLS files are checked for changes. The
// check happens during a handshake, so an idle server does not touch the files.
const tlsReloadInterval = time.Second

// TLSOptions configures TLS on the xDS gRPC server: a certificate and key, and
// optionally a CA that client certificates must be signed by. All three are PEM
// files, reloaded when they change. Without a certificate the server is plaintext.
type TLSOptions struct {
	// CertFile is the server's PEM certificate (chain); empty: plaintext.
	CertFile string
	// KeyFile is the PEM private key of CertFile.
	KeyFile string
	// ClientCAFile, if set, is a PEM CA bundle that proxies' client certificates must
	// be signed by.
	ClientCAFile string
}

// AddFlags binds the options to --xds-tls-cert, --xds-tls-key and --xds-client-ca.
func (o *TLSOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.CertFile, "xds-tls-cert", "", "PEM certificate (chain) of the xDS server, reloaded when the file changes; requires --xds-tls-key (empty: plaintext xDS, on loopback only unless --xds-allow-plaintext-remote)")
	fs.StringVar(&o.KeyFile, "xds-tls-key", "", "PEM private key of --xds-tls-cert, reloaded when the file changes")
	fs.StringVar(&o.ClientCAFile, "xds-client-ca", "", "PEM CA bundle; when set, proxies must present a client certificate signed by it, whose SPIFFE ID (see --trust-domain) bounds the namespace and service account their node may claim (requires --xds-tls-cert and --xds-tls-key)")
}

func (o *TLSOptions) enabled() bool { return o.CertFile != "" }

// Validate checks that the flags go together and that the files load.
func (o *TLSOptions) Validate() error {
	switch {
	case o.CertFile == "" && o.KeyFile == "":
		if o.ClientCAFile != "" {
			return errors.New("--xds-client-ca: requires --xds-tls-cert and --xds-tls-key")
		}
		return nil
	case o.KeyFile == "":
		return errors.New("--xds-tls-cert: requires --xds-tls-key")
	case o.CertFile == "":
		return errors.New("--xds-tls-key: requires --xds-tls-cert")
	}
	_, err := o.load()
	return err
}

// tlsMaterial is one loaded version of the TLS files.
type tlsMaterial struct {
	cert      *tls.Certificate
	clientCAs *x509.CertPool // nil without --xds-client-ca
}

// load reads and parses the TLS files. Its errors name the flag and the file, never
// the files' contents.
func (o *TLSOptions) load() (*tlsMaterial, error) {
	certPEM, err := os.ReadFile(o.CertFile)
	if err != nil {
		return nil, fmt.Errorf("--xds-tls-cert: %w", err)
	}
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("--xds-tls-cert %s: %w", o.CertFile, err)
	}
	keyPEM, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("--xds-tls-key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("--xds-tls-key %s: %w", o.KeyFile, err)
	}
	cert.Leaf = chain[0]
	m := &tlsMaterial{cert: &cert}
	if o.ClientCAFile == "" {
		return m, nil
	}
	caPEM, err := os.ReadFile(o.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("--xds-client-ca: %w", err)
	}
	cas, err := parseCertificates(caPEM)
	if err != nil {
		return nil, fmt.Errorf("--xds-client-ca %s: %w", o.ClientCAFile, err)
	}
	m.clientCAs = x509.NewCertPool()
	for _, ca := range cas {
		m.clientCAs.AddCert(ca)
	}
	return m, nil
}

// parseCertificates parses every CERTIFICATE block of a PEM file; there must be one.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// serverOption returns the transport credentials of the xDS server listening on addr:
// TLS when configured, otherwise plaintext, with a warning when addr is reachable from
// other hosts.
func (o *TLSOptions) serverOption(logger *slog.Logger, addr net.Addr) (grpc.ServerOption, error) {
	if !o.enabled() {
		if !isLoopbackAddr(addr) {
			logger.Warn("xDS is served in plaintext: proxies are not authenticated and their configuration is readable on the network; "+
				"enable TLS with --xds-tls-cert and --xds-tls-key, and require client certificates with --xds-client-ca",
				"address", addr.String())
		}
		return grpc.Creds(insecure.NewCredentials()), nil
	}
	r, err := newTLSReloader(*o, logger, tlsReloadInterval)
	if err != nil {
		return nil, err
	}
	leaf := r.cur.cert.Leaf
	logger.Info("xDS served over TLS", "address", addr.String(), "certFile", o.CertFile,
		"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(), "notAfter", leaf.NotAfter,
		"clientCAFile", o.ClientCAFile, "clientCertRequired", o.ClientCAFile != "")
	if time.Now().After(leaf.NotAfter) {
		logger.Warn("xDS TLS certificate has expired", "certFile", o.CertFile, "notAfter", leaf.NotAfter)
	}
	return grpc.Creds(credentials.NewTLS(r.config())), nil
}

// isLoopbackAddr reports whether addr is a loopback IP address. An unspecified address
// (":15010", "0.0.0.0:15010") listens on every interface, so it is not.
func isLoopbackAddr(addr net.Addr) bool {
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// fileStamp identifies one version of a file: which file it is, its modification
// time and size, or the error that stat returned.
type fileStamp struct {
	info os.FileInfo
	err  string
}

func statFile(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{err: err.Error()}
	}
	return fileStamp{info: fi}
}

func (a fileStamp) equal(b fileStamp) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil && a.err == b.err
	}
	// SameFile tells an atomically renamed replacement from the file it replaced.
	return os.SameFile(a.info, b.info) && a.info.ModTime().Equal(b.info.ModTime()) && a.info.Size() == b.info.Size()
}

func equalStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].equal(b[i]) {
			return false
		}
	}
	return true
}

// tlsReloader hands TLS handshakes the current certificate and client CAs, reloading
// the files when one of them changed, checked at most once per interval. A reload
// that fails keeps the last good version and is logged once per bad version of the
// files. tlsReloader is safe for concurrent use; handshakes call it from their own
// goroutines.
type tlsReloader struct {
	opts     TLSOptions
	logger   *slog.Logger
	interval time.Duration

	mu       sync.Mutex
	checked  time.Time    // last check of the files; guarded by mu
	cur      *tlsMaterial // last good version; guarded by mu
	curStamp []fileStamp  // the files' stamps when cur was loaded; guarded by mu
	badStamp []fileStamp  // the files' stamps when a load last failed; guarded by mu
}

func newTLSReloader(opts TLSOptions, logger *slog.Logger, interval time.Duration) (*tlsReloader, error) {
	r := &tlsReloader{opts: opts, logger: logger, interval: interval}
	stamps := r.stat()
	m, err := opts.load()
	if err != nil {
		return nil, err
	}
	r.cur, r.curStamp, r.checked = m, stamps, time.Now()
	return r, nil
}

func (r *tlsReloader) stat() []fileStamp {
	stamps := []fileStamp{statFile(r.opts.CertFile), statFile(r.opts.KeyFile)}
	if r.opts.ClientCAFile != "" {
		stamps = append(stamps, statFile(r.opts.ClientCAFile))
	}
	return stamps
}

// current returns the TLS material to use now, reloading it first if it is due and
// the files changed.
func (r *tlsReloader) current() *tlsMaterial {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < r.interval {
		return r.cur
	}
	r.checked = now
	// Stat before reading: a change made while reading shows at the next check.
	stamps := r.stat()
	if equalStamps(stamps, r.curStamp) || equalStamps(stamps, r.badStamp) {
		return r.cur
	}
	m, err := r.opts.load()
	if err != nil {
		r.badStamp = stamps
		r.logger.Error("reload xDS TLS files failed; serving the previous certificate", "error", err)
		return r.cur
	}
	r.cur, r.curStamp, r.badStamp = m, stamps, nil
	leaf := m.cert.Leaf
	r.logger.Info("xDS TLS files reloaded", "certFile", r.opts.CertFile,
		"subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(), "notAfter", leaf.NotAfter,
		"clientCAFile", r.opts.ClientCAFile)
	return m
}

// config returns the server's TLS configuration. The certificate comes from
// GetCertificate; with a client CA, GetConfigForClient builds each handshake's
// configuration so that a reloaded CA applies to new connections.
func (r *tlsReloader) config() *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.current().cert, nil
		},
	}
	if r.opts.ClientCAFile == "" {
		return c
	}
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := r.current()
		return &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{*m.cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    m.clientCAs,
			// Every connection verifies its client certificate against the current
			// CA, rather than resuming a session verified against an older one.
			SessionTicketsDisabled: true,
		}, nil
	}
	return c
}
