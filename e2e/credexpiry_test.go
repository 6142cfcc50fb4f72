package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/secrets"
)

const (
	logExpiring = "remote credential expires soon"
	logExpired  = "remote credential expired"
)

// certNotAfter returns the NotAfter of the client certificate in kubeconfig kc.
func certNotAfter(t *testing.T, kc []byte) time.Time {
	t.Helper()
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range cfg.AuthInfos {
		b, _ := pem.Decode(u.ClientCertificateData)
		if b == nil {
			t.Fatal("kubeconfig has no client certificate")
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c.NotAfter
	}
	t.Fatal("kubeconfig has no user")
	return time.Time{}
}

// TestCredentialExpiry reads the expiry of real credentials — a bound token from the
// remote API server's TokenRequest API, then a client certificate the API server
// accepts — and moves an injected clock through the warning window and past expiry:
// the key's status follows (valid, expiring, expired), each transition is logged
// once, and the cluster keeps serving. A rotation to the certificate shows its
// expiry; a certificate already expired is shown expired and refused by the API
// server.
func TestCredentialExpiry(t *testing.T) {
	ctx := t.Context()
	clk := testingclock.NewFakeClock(time.Now())
	h := startHorizonWith(t, 10*time.Second, func(o *secrets.Options) {
		o.Clock = clk
		o.ExpiryWarning = time.Hour
	})
	host := deployWeb(t, remote, "expiry", "10.23.0.1")

	if _, err := remote.MintToken(ctx, "kube-system", "expiry-reader", time.Hour); err != nil { // the account and its RBAC
		t.Fatal(err)
	}
	secs := int64(2 * time.Hour / time.Second)
	tr, err := remote.Client.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "expiry-reader",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := remote.Kubeconfig(tr.Status.Token)
	if err != nil {
		t.Fatal(err)
	}
	applySecret(t, remoteSecret("expiry", map[string][]byte{"exp": kc}))
	h.waitSynced(t, "exp")
	h.waitEndpoints(t, host, 80, "exp", "10.23.0.1")

	want := func(source string, expiry time.Time, state secrets.CredentialState) func() error {
		return func() error {
			st, ok := h.keyStatus("expiry", "exp")
			if !ok || st.CredentialSource != source || !st.CredentialExpiry.Equal(expiry) || st.CredentialState != state {
				return fmt.Errorf("key status %+v, want credential %s expiring %s, state %s", st, source, expiry, state)
			}
			return nil
		}
	}
	tokenExpiry := tr.Status.ExpirationTimestamp.UTC()
	kubetest.Eventually(t, timeoutShort, want("token", tokenExpiry, secrets.CredentialValid))

	// Into the warning window: expiring, and one warning.
	clk.Step(90 * time.Minute)
	kubetest.Eventually(t, timeoutShort, want("token", tokenExpiry, secrets.CredentialExpiring))
	kubetest.Eventually(t, timeoutShort, logCount(h, logExpiring, 1))
	// Further ticks inside the window log nothing more; past expiry: expired, one line.
	for range 5 {
		clk.Step(time.Minute)
	}
	clk.Step(time.Hour)
	kubetest.Eventually(t, timeoutShort, want("token", tokenExpiry, secrets.CredentialExpired))
	kubetest.Eventually(t, timeoutShort, logCount(h, logExpired, 1))
	clk.Step(time.Minute)
	clk.Step(time.Minute)
	kubetest.Consistently(t, 200*time.Millisecond, func() error {
		if err := logCount(h, logExpiring, 1)(); err != nil {
			return err
		}
		return logCount(h, logExpired, 1)()
	})
	// Horizon's verdict changes nothing it serves: the remote API server decides
	// whether the credential still works (here it does: its clock is not the fake one).
	if c, _ := h.cluster("exp"); c.State != clusterregistry.StateSynced {
		t.Fatalf("cluster %+v, want it still synced", c)
	}
	h.waitEndpoints(t, host, 80, "exp", "10.23.0.1")

	// Rotate to a client certificate valid for 3h from the (fake) now: hot-swapped,
	// its NotAfter shown, valid again.
	certKC, err := remote.MintClientCert(ctx, "expiry-cert-reader", clk.Now().Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	applySecret(t, remoteSecret("expiry", map[string][]byte{"exp": certKC}))
	notAfter := certNotAfter(t, certKC).UTC()
	kubetest.Eventually(t, timeoutShort, want("client-certificate", notAfter, secrets.CredentialValid))
	kubetest.Eventually(t, 15*time.Second, func() error {
		if c, _ := h.cluster("exp"); c.Rotation != nil || c.State != clusterregistry.StateSynced {
			return fmt.Errorf("not swapped to the certificate yet: %+v", c)
		}
		return nil
	})
	// The certificate is what the cluster uses now: revoking the token's account
	// changes nothing.
	if err := remote.RevokeServiceAccount(ctx, "kube-system", "expiry-reader"); err != nil {
		t.Fatal(err)
	}
	deploy(t, remote, kubetest.Service{
		Namespace: "expiry", Name: "web",
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.23.0.1", Ready: true}, {Pod: "web-2", IP: "10.23.0.2", Ready: true}},
	})
	h.waitEndpoints(t, host, 80, "exp", "10.23.0.1", "10.23.0.2")

	// A certificate that expired already: shown expired, and the API server refuses it.
	expiredKC, err := remote.MintClientCert(ctx, "expiry-old-reader", time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	applySecret(t, remoteSecret("expired", map[string][]byte{"old": expiredKC}))
	kubetest.Eventually(t, 15*time.Second, func() error {
		st, _ := h.keyStatus("expired", "old")
		c, _ := h.cluster("old")
		if st.CredentialState != secrets.CredentialExpired || c.State == clusterregistry.StateSynced || c.State == clusterregistry.StatePending {
			return fmt.Errorf("key %+v, cluster %+v: want the credential expired and the cluster not synced", st, c)
		}
		return nil
	})
	if strings.Contains(h.logs.String(), tr.Status.Token) {
		t.Fatal("a log line holds the token")
	}
}

// timeoutShort bounds waits for the controller to react.
const timeoutShort = 10 * time.Second

// logCount checks that msg was logged exactly n times.
func logCount(h *horizon, msg string, n int) func() error {
	return func() error {
		if got := strings.Count(h.logs.String(), msg); got != n {
			return fmt.Errorf("%q logged %d times, want %d", msg, got, n)
		}
		return nil
	}
}
