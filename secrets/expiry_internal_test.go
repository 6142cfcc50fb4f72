package secrets

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

func jwtWith(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + ".c2ln"
}

func certPEM(t *testing.T, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "reader"},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter,
	}, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "ca"}}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCredentialExpiry(t *testing.T) {
	exp := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	jwt := func(payload string) string {
		return jwtWith(strings.ReplaceAll(payload, "EXP", strconv.FormatInt(exp.Unix(), 10)))
	}
	early := exp.Add(-time.Hour)
	tests := []struct {
		name       string
		cfg        rest.Config
		want       time.Time
		wantSource string
	}{
		{"jwt exp", rest.Config{BearerToken: jwt(`{"iss":"x","exp":EXP}`)}, exp, credentialToken},
		{"jwt fractional exp", rest.Config{BearerToken: jwt(`{"exp":EXP.5}`)}, exp.Add(500 * time.Millisecond), credentialToken},
		{"jwt padded payload", rest.Config{BearerToken: strings.Replace(jwt(`{"exp":EXP}`), ".c2ln", "==.c2ln", 1)}, exp, credentialToken},
		{"jwt without exp", rest.Config{BearerToken: jwt(`{"sub":"x"}`)}, time.Time{}, ""},
		{"jwt with string exp", rest.Config{BearerToken: jwt(`{"exp":"EXP"}`)}, time.Time{}, ""},
		{"jwt with negative exp", rest.Config{BearerToken: jwt(`{"exp":-5}`)}, time.Time{}, ""},
		{"jwt exp past year 9999", rest.Config{BearerToken: jwt(`{"exp":1e300}`)}, time.Time{}, ""},
		{"jwt payload not JSON", rest.Config{BearerToken: jwt(`not json`)}, time.Time{}, ""},
		{"jwt payload not base64", rest.Config{BearerToken: "a.%%%.c"}, time.Time{}, ""},
		{"opaque token", rest.Config{BearerToken: "abcdef0123456789"}, time.Time{}, ""},
		{"oversized token", rest.Config{BearerToken: jwt(`{"exp":EXP,"pad":"` + strings.Repeat("x", maxJWTBytes) + `"}`)}, time.Time{}, ""},
		{"no credential", rest.Config{}, time.Time{}, ""},
		{"client certificate", rest.Config{TLSClientConfig: rest.TLSClientConfig{CertData: certPEM(t, exp)}}, exp, credentialCert},
		{"certificate chain: earliest", rest.Config{TLSClientConfig: rest.TLSClientConfig{
			CertData: append(certPEM(t, exp), certPEM(t, early)...)}}, early, credentialCert},
		{"certificate data not PEM", rest.Config{TLSClientConfig: rest.TLSClientConfig{CertData: []byte("garbage")}}, time.Time{}, ""},
		{"token and certificate: earlier", rest.Config{BearerToken: jwt(`{"exp":EXP}`),
			TLSClientConfig: rest.TLSClientConfig{CertData: certPEM(t, early)}}, early, credentialCert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, source := credentialExpiry(&tt.cfg)
			if !got.Equal(tt.want) || source != tt.wantSource {
				t.Errorf("credentialExpiry = %v %q, want %v %q", got, source, tt.want, tt.wantSource)
			}
		})
	}
}

func TestCredentialState(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		expiry time.Time
		warn   time.Duration
		want   CredentialState
	}{
		{"unknown", time.Time{}, time.Hour, CredentialUnknown},
		{"valid", now.Add(2 * time.Hour), time.Hour, CredentialValid},
		{"at the warning edge", now.Add(time.Hour), time.Hour, CredentialExpiring},
		{"expiring", now.Add(time.Minute), time.Hour, CredentialExpiring},
		{"no warning window", now.Add(time.Minute), 0, CredentialValid},
		{"at expiry", now, time.Hour, CredentialExpired},
		{"expired", now.Add(-time.Second), 0, CredentialExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := credentialState(tt.expiry, now, tt.warn); got != tt.want {
				t.Errorf("credentialState = %s, want %s", got, tt.want)
			}
		})
	}
}
