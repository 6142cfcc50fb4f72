package e2e

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/horizon-mesh/horizon/cmd/horizon/app/debugauth"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// testDebugAccessRBAC checks, with horizon.yaml applied to the config cluster, that
// Horizon's /debug/ guard works under horizon.yaml's service account: it may review
// tokens and access, and it lets a caller from another host through with the token of
// a service account bound to ClusterRole horizon-debug (as examples/README.md binds
// it), and nobody else. Without the review rules in ClusterRole horizon every remote
// caller gets 503; without ClusterRole horizon-debug, 403.
func testDebugAccessRBAC(t *testing.T) {
	ctx := t.Context()
	const ns = "debug-operators"
	if err := kubetest.EnsureNamespace(ctx, config.Client, ns, nil); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, sa := range []string{"operator", "stranger"} {
		sas := config.Client.CoreV1().ServiceAccounts(ns)
		if _, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := sas.Delete(context.Background(), sa, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Error(err)
			}
		})
		// kubectl create token <sa> --audience horizon
		tr, err := sas.CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{debugauth.DefaultAudience}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tokens[sa] = tr.Status.Token
	}
	// kubectl create clusterrolebinding horizon-debug-operator --clusterrole horizon-debug --serviceaccount debug-operators:operator
	crbs := config.Client.RbacV1().ClusterRoleBindings()
	if _, err := crbs.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "horizon-debug-operator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "horizon-debug"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "operator", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := crbs.Delete(context.Background(), "horizon-debug-operator", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	})

	logs := &kubetest.LogBuffer{}
	filter, err := debugauth.New(debugauth.Options{
		Access: debugauth.AccessLoopbackOrToken, Audience: debugauth.DefaultAudience,
		Client: impersonate(t, config, systemNamespace, horizonSA).cs,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := filter.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "debug") }))
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"operator", "/debug/clusterz", tokens["operator"], http.StatusOK},
		{"operator", "/debug/pprof/heap", tokens["operator"], http.StatusOK},
		{"stranger", "/debug/clusterz", tokens["stranger"], http.StatusForbidden},
		{"no token", "/debug/clusterz", "", http.StatusUnauthorized},
	} {
		req := httptest.NewRequest(http.MethodGet, "http://horizon"+tc.path, nil)
		req.RemoteAddr = "192.0.2.20:41000"
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: GET %s from another host: %d %s, want %d", tc.name, tc.path, rec.Code, strings.TrimSpace(rec.Body.String()), tc.want)
		}
	}
	if t.Failed() {
		t.Logf("logs:\n%s", logs.String())
	}
}
