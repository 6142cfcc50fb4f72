package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/secrets"
)

// jwtExp reads the exp claim of a JWT, for checking what the API server issued.
func jwtExp(t *testing.T, token string) time.Time {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT (%d parts)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(b, &claims); err != nil || claims.Exp == 0 {
		t.Fatalf("token has no exp claim: %v", err)
	}
	return time.Unix(claims.Exp, 0).UTC()
}

// TestCreateRemoteSecretTokenDuration: --token-duration issues a bound token through
// the TokenRequest API (no token Secret) that expires when asked; applied to the
// config cluster it works, and horizon serve shows its expiry in /metrics,
// /debug/clusterz and horizon status, as expiring within --credential-expiry-warning.
func TestCreateRemoteSecretTokenDuration(t *testing.T) {
	ctx := t.Context()
	const ns = "token-duration"
	before := time.Now()
	out := runCreateRemoteSecret(t, "--kubeconfig", adminKubeconfig(t, cluster2), "--name", "td",
		"--namespace", ns, "--secret-namespace", "istio-system", "--token-duration", "2h")
	exp := jwtExp(t, out.token(t))
	if exp.Before(before.Add(2*time.Hour-time.Minute)) || exp.After(time.Now().Add(2*time.Hour+time.Minute)) {
		t.Fatalf("token expires at %s, want 2h from %s", exp, before)
	}
	if !strings.Contains(out.stderr, "expires at "+exp.Format(time.RFC3339)) || strings.Contains(out.stderr, "max-token-expiration") {
		t.Errorf("stderr does not say when the token expires, or says it was capped:\n%s", out.stderr)
	}
	if _, err := cluster2.Client.CoreV1().Secrets(ns).Get(ctx, defaultReaderServiceAccount+"-token", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("token Secret: err = %v, want none created", err)
	}
	if got, want := whoAmI(t, out.client(t)), "system:serviceaccount:"+ns+":"+defaultReaderServiceAccount; got != want {
		t.Errorf("token authenticates as %q, want %q", got, want)
	}

	if err := kubetest.EnsureNamespace(ctx, cluster1.Client, "istio-system", nil); err != nil {
		t.Fatal(err)
	}
	secretsAPI := cluster1.Client.CoreV1().Secrets("istio-system")
	if _, err := secretsAPI.Create(ctx, out.secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = secretsAPI.Delete(context.Background(), out.secret.Name, metav1.DeleteOptions{}) })
	_, httpAddr, _ := startServe(t, "--credential-expiry-warning", "3h")
	base := "http://" + httpAddr

	// /debug/clusterz: the key's credential, expiring.
	kubetest.Eventually(t, 15*time.Second, func() error {
		_, body := httpGet(t, base+"/debug/clusterz")
		var cz app.ClusterzResponse
		if err := json.Unmarshal([]byte(body), &cz); err != nil {
			return err
		}
		for _, k := range cz.Secrets {
			if k.Key == "td" {
				if k.CredentialSource != "token" || !k.CredentialExpiry.Equal(exp) || k.CredentialState != secrets.CredentialExpiring {
					return fmt.Errorf("key status %+v, want token expiring at %s", k, exp)
				}
				return nil
			}
		}
		return fmt.Errorf("no key td in %s", body)
	})

	// /metrics: the expiry timestamp and the state count.
	_, metrics := httpGet(t, base+"/metrics")
	m := regexp.MustCompile(`(?m)^horizon_remote_credential_expiry_timestamp_seconds\{cluster="td"\} (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatalf("no expiry metric for cluster td in:\n%s", grepLines(metrics, "credential"))
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil || math.Abs(v-float64(exp.Unix())) > 0.5 {
		t.Errorf("expiry metric = %s, want %d", m[1], exp.Unix())
	}
	if !strings.Contains(metrics, `horizon_remote_credentials{state="expiring"} 1`) {
		t.Errorf("no expiring credential counted:\n%s", grepLines(metrics, "credential"))
	}

	// horizon status: the CREDENTIAL column and the warning line; an expiring
	// credential is no error.
	var status bytes.Buffer
	if err := run(ctx, []string{"status", "--address", httpAddr}, &status, &status); err != nil {
		t.Fatalf("horizon status: %v\n%s", err, status.String())
	}
	if !regexp.MustCompile(`(?m)^td\s.*\s1h \(warning\)\s`).MatchString(status.String()) || !strings.Contains(status.String(), "CREDENTIAL") {
		t.Errorf("status has no CREDENTIAL column showing 1h (warning) for td:\n%s", status.String())
	}
	if !strings.Contains(status.String(), `key "td": credential (token) expires at `+exp.Format(time.RFC3339)) {
		t.Errorf("status has no warning line for td:\n%s", status.String())
	}
	if strings.Contains(status.String()+metrics, out.token(t)) {
		t.Fatal("the token appears in status or metrics")
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
