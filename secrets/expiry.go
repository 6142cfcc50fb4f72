package secrets

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// CredentialState says how close the credential of an accepted kubeconfig is to
// expiring.
type CredentialState string

const (
	// CredentialUnknown: the expiry cannot be read (a token that is not a JWT, or one
	// without an exp claim, or a credential named by file path).
	CredentialUnknown CredentialState = "unknown"
	// CredentialValid: the credential expires later than the warning window.
	CredentialValid CredentialState = "valid"
	// CredentialExpiring: the credential expires within the warning window
	// (Options.ExpiryWarning): rotate it.
	CredentialExpiring CredentialState = "expiring"
	// CredentialExpired: the expiry has passed. The remote API server refuses the
	// credential from then on, so the cluster's watches fail at their next reconnect
	// and the cluster goes stale; what Horizon serves meanwhile follows the stale rules.
	CredentialExpired CredentialState = "expired"
)

// CredentialStates is every CredentialState, in a fixed order.
var CredentialStates = []CredentialState{CredentialValid, CredentialExpiring, CredentialExpired, CredentialUnknown}

// Credential sources: what the expiry was read from.
const (
	credentialToken = "token"
	credentialCert  = "client-certificate"
)

const (
	// maxJWTBytes bounds the bearer token decoded to read its exp claim; a longer
	// one's expiry is unknown. Service-account tokens are about 1 KiB.
	maxJWTBytes = 16 << 10
	// maxCertBlocks bounds the PEM blocks read from client certificate data.
	maxCertBlocks = 16
)

// credentialExpiry returns when the credential of cfg expires and what that was read
// from, or a zero time when it cannot be read. The bearer token's payload is decoded
// for its exp claim only: nothing else in it is read, and its signature is not
// checked (Horizon is not the token's audience; the remote API server judges it). For
// a client certificate the earliest NotAfter of the chain presented counts. With
// both, the earlier of the two counts. Credentials named by file path are not read.
func credentialExpiry(cfg *rest.Config) (time.Time, string) {
	var at time.Time
	var source string
	if t, ok := jwtExpiry(cfg.BearerToken); ok {
		at, source = t, credentialToken
	}
	if t, ok := certExpiry(cfg.CertData); ok && (at.IsZero() || t.Before(at)) {
		at, source = t, credentialCert
	}
	return at, source
}

// jwtExpiry reads the exp claim of a JWT (header.payload.signature). Anything that
// is not one, or has no numeric exp, is unknown.
func jwtExpiry(token string) (time.Time, bool) {
	if token == "" || len(token) > maxJWTBytes || strings.Count(token, ".") != 2 {
		return time.Time{}, false
	}
	payload := strings.Split(token, ".")[1]
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(payload, "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.RawMessage `json:"exp"`
	}
	// A NumericDate is a JSON number: a quoted one is not.
	if err := json.Unmarshal(b, &claims); err != nil || len(claims.Exp) == 0 || claims.Exp[0] < '0' || claims.Exp[0] > '9' {
		return time.Time{}, false
	}
	secs, err := strconv.ParseFloat(string(claims.Exp), 64)
	// NumericDate: seconds since the epoch, possibly fractional. Past year 9999 is
	// not a date anyone means.
	if err != nil || math.IsNaN(secs) || secs <= 0 || secs > 253402300799 {
		return time.Time{}, false
	}
	whole, frac := math.Modf(secs)
	return time.Unix(int64(whole), int64(frac*1e9)).UTC(), true
}

// certExpiry returns the earliest NotAfter of the certificates in PEM data.
func certExpiry(data []byte) (time.Time, bool) {
	var at time.Time
	for i := 0; i < maxCertBlocks; i++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		if at.IsZero() || cert.NotAfter.Before(at) {
			at = cert.NotAfter
		}
	}
	return at.UTC(), !at.IsZero()
}

// credentialState is the state of a credential expiring at expiry, at now, with a
// warning window of warn.
func credentialState(expiry, now time.Time, warn time.Duration) CredentialState {
	switch {
	case expiry.IsZero():
		return CredentialUnknown
	case !now.Before(expiry):
		return CredentialExpired
	case expiry.Sub(now) <= warn:
		return CredentialExpiring
	default:
		return CredentialValid
	}
}
