package dataplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Certs is a mesh CA and one workload identity, on disk for grpc-go's file_watcher
// certificate provider and in memory for servers.
type Certs struct {
	Dir      string // holds ca.pem, cert.pem, key.pem
	CAFile   string
	CertFile string
	KeyFile  string
	Pool     *x509.CertPool
	Cert     tls.Certificate

	caCert *x509.Certificate
	caDER  []byte
	caKey  *ecdsa.PrivateKey
}

// NewCerts makes a CA and a workload certificate for spiffe://cluster.local/ns/<ns>/sa/<sa>,
// written to dir.
func NewCerts(dir, ns, sa string) (*Certs, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "horizon local mesh CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	ca := &Certs{caCert: caCert, caDER: caDER, caKey: caKey}
	return ca.Issue(dir, ns, sa)
}

// Issue makes another workload's certificate, for spiffe://cluster.local/ns/<ns>/sa/<sa>,
// signed by the same CA and written with the CA bundle to dir. Servers of a service
// present the identity of the service account their pods run as: clients accept
// no other.
func (c *Certs) Issue(dir, ns, sa string) (*Certs, error) {
	caCert, caDER, caKey := c.caCert, c.caDER, c.caKey
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id, _ := url.Parse("spiffe://cluster.local/ns/" + ns + "/sa/" + sa)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: sa},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		URIs:        []*url.URL{id},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	out := &Certs{
		Dir:      dir,
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
		Pool:     x509.NewCertPool(),
		caCert:   caCert, caDER: caDER, caKey: caKey,
	}
	out.Pool.AddCert(caCert)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	for path, b := range map[string][]byte{
		out.CAFile:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		out.CertFile: certPEM,
		out.KeyFile:  keyPEM,
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, err
		}
	}
	out.Cert, err = tls.X509KeyPair(certPEM, keyPEM)
	return out, err
}
