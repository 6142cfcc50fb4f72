package clusterregistry_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

const bodyMarker = "BODY-MARKER-from-the-remote"

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRemoteErrorBodyNeverShown points clusters at servers that answer every request
// with an error whose body carries a marker, and a server URL carrying credentials:
// status and logs show the status code and reason only, and the server without its
// userinfo or query.
func TestRemoteErrorBodyNeverShown(t *testing.T) {
	statusJSON := func(code int, reason string) string {
		b, _ := json.Marshal(map[string]any{
			"kind": "Status", "apiVersion": "v1", "status": "Failure",
			"message": bodyMarker, "reason": reason, "code": code,
			"details": map[string]any{"causes": []map[string]string{{"message": bodyMarker}}},
		})
		return string(b)
	}
	tests := []struct {
		name        string
		code        int
		contentType string
		body        string
		want        string
	}{
		{name: "403 plain text", code: http.StatusForbidden, contentType: "text/plain", body: "denied " + bodyMarker, want: "remote API server answered 403 Forbidden"},
		{name: "500 plain text", code: http.StatusInternalServerError, contentType: "text/plain", body: bodyMarker, want: "remote API server answered 500 Internal Server Error"},
		{name: "403 Status", code: http.StatusForbidden, contentType: "application/json", body: statusJSON(403, "Forbidden"), want: "remote API server answered 403 Forbidden"},
		{name: "500 Status, made-up reason", code: http.StatusInternalServerError, contentType: "application/json", body: statusJSON(500, bodyMarker), want: "remote API server answered 500 Internal Server Error"},
		{name: "401 Status", code: http.StatusUnauthorized, contentType: "application/json", body: statusJSON(401, "Unauthorized"), want: "remote API server answered 401 Unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				w.WriteHeader(tt.code)
				fmt.Fprint(w, tt.body)
			}))
			t.Cleanup(srv.Close)
			var logs lockedBuffer
			r, err := clusterregistry.New(clusterregistry.Options{
				DomainSuffix: "cluster.local",
				Namespace:    "istio-system",
				SyncTimeout:  time.Minute,
				Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.Close)
			host := strings.Replace(srv.URL, "http://", "http://admin:S3CRET@", 1) + "?x=S3CRET"
			r.SetCluster("hostile", "test", &rest.Config{Host: host, BearerToken: "tok-S3CRET"})

			var st clusterregistry.ClusterStatus
			kubetest.Eventually(t, 20*time.Second, func() error {
				for _, s := range r.Clusters() {
					if s.ID == "hostile" && s.LastError != "" {
						st = s
						return nil
					}
				}
				return fmt.Errorf("no error recorded yet: %+v", r.Clusters())
			})
			t.Logf("last error: %s", st.LastError)
			if !strings.Contains(st.LastError, tt.want) {
				t.Errorf("last error %q does not contain %q", st.LastError, tt.want)
			}
			if want := srv.URL; st.Server != want {
				t.Errorf("server = %q, want %q", st.Server, want)
			}
			shown, _ := json.Marshal(r.Clusters())
			for _, secret := range []string{bodyMarker, "S3CRET"} {
				if strings.Contains(string(shown), secret) {
					t.Errorf("status shows %q: %s", secret, shown)
				}
				if strings.Contains(logs.String(), secret) {
					t.Errorf("logs show %q: %s", secret, logs.String())
				}
			}
		})
	}
}
