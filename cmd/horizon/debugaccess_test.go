package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// debugAddr is a non-loopback address of the private network namespace that
// TestStatusRemoteDebugAccess runs in. A connection to it from the same namespace
// comes from it too: to Horizon, a caller on another host.
const debugAddr = "192.0.2.40"

// TestStatusRemoteDebugAccess runs `horizon serve` with examples/horizon.yaml's
// RBAC, as its service account, listening on every address of a private network
// namespace, and `horizon status` against it: through loopback with no token, and
// through a non-loopback address with the token of an operator bound to ClusterRole
// horizon-debug (as examples/README.md binds it), of an unbound service account, a
// garbage token, a token for the API server's audience, and none. /healthz, /readyz
// and /metrics answer every caller.
func TestStatusRemoteDebugAccess(t *testing.T) {
	if kubetest.RunInNetns(t, "debugaccess_test.go") {
		return
	}
	ctx := t.Context()
	if err := kubetest.ApplyFile(ctx, cluster1.Config, "../../examples/horizon.yaml"); err != nil {
		t.Fatal(err)
	}
	const ns = "ops"
	if err := kubetest.EnsureNamespace(ctx, cluster1.Client, ns, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenOf := func(ns, sa string, audiences ...string) string {
		t.Helper()
		tr, err := cluster1.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: audiences},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	tokenFile := func(name, token string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, sa := range []string{"operator", "stranger"} {
		if _, err := cluster1.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cluster1.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "horizon-debug-operator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "horizon-debug"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "operator", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{
		"horizon":        tokenOf("istio-system", "horizon"),
		"operator":       tokenOf(ns, "operator", "horizon"),
		"stranger":       tokenOf(ns, "stranger", "horizon"),
		"operator-kube":  tokenOf(ns, "operator"), // for the API server's audience
		"garbage-secret": "garbage-token-0123456789",
	}

	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	_, _, logs := startServeWith(t, serveSetup{token: tokens["horizon"], httpAddress: "0.0.0.0:" + port})
	local, remote := net.JoinHostPort("127.0.0.1", port), net.JoinHostPort(debugAddr, port)

	status := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append([]string{"status", "--timeout", "20s"}, args...), &out, &out)
		return out.String(), err
	}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // empty: success
	}{
		{"loopback, no token", []string{"--address", local}, ""},
		{"remote, operator's token file", []string{"--address", remote, "--token-file", tokenFile("operator", tokens["operator"])}, ""},
		{"remote, operator's token", []string{"--address", remote, "--token", tokens["operator"]}, ""},
		{"remote, no token", []string{"--address", remote}, "401 Unauthorized: unauthorized: callers other than loopback need a bearer token"},
		{"remote, unbound token", []string{"--address", remote, "--token-file", tokenFile("stranger", tokens["stranger"])},
			`403 Forbidden: forbidden: user "system:serviceaccount:ops:stranger" may not get /debug/clusterz`},
		{"remote, garbage token", []string{"--address", remote, "--token", tokens["garbage-secret"]}, "401 Unauthorized: unauthorized: the bearer token was not accepted"},
		{"remote, token for the API server", []string{"--address", remote, "--token-file", tokenFile("kube", tokens["operator-kube"])},
			`not issued for audience "horizon"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := status(tc.args...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("horizon status: %v\n%s", err, out)
			case tc.wantErr == "" && !strings.Contains(out, "cluster1"):
				t.Errorf("horizon status printed no cluster1:\n%s", out)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("horizon status: err %v, want %q\n%s", err, tc.wantErr, out)
			}
		})
	}

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + remote + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s from a non-loopback address without a token: %s", path, resp.Status)
		}
		// Each successful run of horizon status reads four endpoints (clusterz,
		// networkz, syncz, mcsz): one run through loopback, two with the operator's
		// token.
		if path == "/metrics" {
			for _, want := range []string{`horizon_debug_requests_total{outcome="allowed"} 8`, `horizon_debug_requests_total{outcome="loopback"} 4`} {
				if !strings.Contains(string(body), want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		}
	}
	for name, tok := range tokens {
		if strings.Contains(logs.String(), tok) {
			t.Errorf("the %s token appears in horizon's logs", name)
		}
	}
}
