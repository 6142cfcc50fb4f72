package debugauth_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/cmd/horizon/app/debugauth"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// cluster is the config cluster, a real API server (RBAC authorization, service
// account tokens) shared by the tests.
var cluster *kubetest.Cluster

func TestMain(m *testing.M) {
	kubetest.Main(m, func(_ *kubetest.Environment, cs []*kubetest.Cluster) { cluster = cs[0] }, "config")
}

const (
	ns        = "debugauth"
	remote    = "192.0.2.10:40000" // a caller on another host
	debugRole = "debugauth-test-debug-reader"
)

// identities makes, once per test binary, service accounts operator (bound to a
// ClusterRole granting get on nonResourceURLs /debug/*, as examples/horizon.yaml's
// horizon-debug does) and stranger (bound to nothing).
var identities = sync.OnceValue(func() error {
	ctx := context.Background()
	cs := cluster.Client
	if err := kubetest.EnsureNamespace(ctx, cs, ns, nil); err != nil {
		return err
	}
	for _, sa := range []string{"operator", "stranger"} {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: debugRole},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/debug/*"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: debugRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: debugRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "operator", Namespace: ns}},
	}, metav1.CreateOptions{})
	return err
})

// token returns a new token of service account sa, for audience (empty: the API
// server's own).
func token(t *testing.T, sa, audience string) string {
	t.Helper()
	if err := identities(); err != nil {
		t.Fatal(err)
	}
	var req authenticationv1.TokenRequest
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	tr, err := cluster.Client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa, &req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// counting is the config cluster's client, counting the requests it makes.
type counting struct {
	requests atomic.Int64
	// block, if set, is called in every request before it is sent.
	block func()
}

func (c *counting) client(t *testing.T) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			c.requests.Add(1)
			if c.block != nil {
				c.block()
			}
			return rt.RoundTrip(r)
		})
	})
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// guarded is a Filter in front of a handler answering "secret" and the path, with
// its logs and metrics.
type guarded struct {
	h       http.Handler
	logs    *kubetest.LogBuffer
	metrics *prometheus.Registry
	api     *counting
}

func newGuarded(t *testing.T, opts debugauth.Options) *guarded {
	t.Helper()
	g := &guarded{logs: &kubetest.LogBuffer{}, metrics: prometheus.NewRegistry(), api: &counting{}}
	opts.Client = g.api.client(t)
	opts.Logger = slog.New(slog.NewTextHandler(g.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Metrics = g.metrics
	if opts.Access == "" {
		opts.Access = debugauth.AccessLoopbackOrToken
	}
	if opts.Audience == "-" {
		opts.Audience = ""
	} else if opts.Audience == "" {
		opts.Audience = debugauth.DefaultAudience
	}
	f, err := debugauth.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	g.h = f.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "the handler saw the token", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "secret", r.URL.Path)
	}))
	return g
}

// get sends GET path from remoteAddr with the headers (name, value, …) and returns
// the status and body.
func (g *guarded) get(path, remoteAddr string, headers ...string) (int, string) {
	req := httptest.NewRequest(http.MethodGet, "http://horizon:15014"+path, nil)
	req.RemoteAddr = remoteAddr
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	g.h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// TestFilter checks each kind of caller against a real API server: what it gets, and
// that the answer says why.
func TestFilter(t *testing.T) {
	operator := token(t, "operator", debugauth.DefaultAudience)
	stranger := token(t, "stranger", debugauth.DefaultAudience)
	operatorForAPIServer := token(t, "operator", "")
	g := newGuarded(t, debugauth.Options{})

	tests := []struct {
		name       string
		path, from string
		headers    []string
		want       int
		wantBody   string
	}{
		{"loopback without a token", "/debug/clusterz", "127.0.0.1:5000", nil, 200, "secret"},
		{"other loopback address", "/debug/syncz", "127.0.0.2:5000", nil, 200, "secret"},
		{"IPv6 loopback", "/debug/syncz", "[::1]:5000", nil, 200, "secret"},
		{"IPv4-mapped loopback", "/debug/syncz", "[::ffff:127.0.0.1]:5000", nil, 200, "secret"},
		{"remote with an authorized token", "/debug/clusterz", remote, bearer(operator), 200, "secret /debug/clusterz"},
		{"remote with an authorized token, pprof", "/debug/pprof/heap", remote, bearer(operator), 200, "secret"},
		{"lowercase scheme", "/debug/networkz", remote, []string{"Authorization", "bearer " + operator}, 200, "secret"},
		{"IPv6 remote with an authorized token", "/debug/clusterz", "[2001:db8::1]:5000", bearer(operator), 200, "secret"},
		{"remote without a token", "/debug/clusterz", remote, nil, 401, "callers other than loopback need a bearer token"},
		{"remote pretending to be forwarded from loopback", "/debug/clusterz", remote,
			[]string{"X-Forwarded-For", "127.0.0.1", "X-Real-IP", "127.0.0.1", "Forwarded", "for=127.0.0.1"}, 401, "need a bearer token"},
		{"remote with a garbage token", "/debug/clusterz", remote, bearer("garbage"), 401, "not accepted by the config cluster"},
		{"remote with basic auth", "/debug/clusterz", remote, []string{"Authorization", "Basic YWRtaW46YWRtaW4="}, 401, "not a bearer token"},
		{"remote with an empty token", "/debug/clusterz", remote, []string{"Authorization", "Bearer "}, 401, "empty bearer token"},
		{"remote with two tokens", "/debug/clusterz", remote, append(bearer(operator), bearer(operator)...), 401, "more than one Authorization header"},
		{"remote with a token for the API server, not for Horizon", "/debug/clusterz", remote, bearer(operatorForAPIServer), 401, `audience "horizon"`},
		{"remote with a token not bound to the debug role", "/debug/clusterz", remote, bearer(stranger), 403,
			`user "system:serviceaccount:debugauth:stranger" may not get /debug/clusterz`},
		{"remote with an authorized token outside /debug/", "/other", remote, bearer(operator), 403, "may not get /other"},
		{"remote with an oversized token", "/debug/clusterz", remote, bearer(strings.Repeat("a", debugauth.DefaultMaxTokenBytes+1)), 401,
			"bearer token longer than 8192 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := g.get(tt.path, tt.from, tt.headers...)
			if code != tt.want || !strings.Contains(body, tt.wantBody) {
				t.Errorf("GET %s from %s: %d %q, want %d and %q", tt.path, tt.from, code, body, tt.want, tt.wantBody)
			}
		})
	}
	for _, tok := range []string{operator, stranger, operatorForAPIServer} {
		if strings.Contains(g.logs.String(), tok) {
			t.Error("a token appears in the logs")
		}
	}
	for outcome, want := range map[string]float64{
		debugauth.OutcomeLoopback: 4, debugauth.OutcomeAllowed: 4, debugauth.OutcomeUnauthenticated: 8, debugauth.OutcomeForbidden: 2,
	} {
		if got := counter(t, g.metrics, outcome); got != want {
			t.Errorf("horizon_debug_requests_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
}

func counter(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "horizon_debug_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no horizon_debug_requests_total{outcome=%q}", outcome)
	return 0
}

func series(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "horizon_debug_requests_total" {
			return len(mf.GetMetric())
		}
	}
	return 0
}

func TestAccessModes(t *testing.T) {
	operator := token(t, "operator", debugauth.DefaultAudience)
	operatorForAPIServer := token(t, "operator", "")
	t.Run("loopback only", func(t *testing.T) {
		g := newGuarded(t, debugauth.Options{Access: debugauth.AccessLoopback})
		if code, _ := g.get("/debug/clusterz", "127.0.0.1:5000"); code != 200 {
			t.Errorf("loopback: %d, want 200", code)
		}
		code, body := g.get("/debug/clusterz", remote, bearer(operator)...)
		if code != 403 || !strings.Contains(body, "answers loopback callers only (horizon serve --debug-access=loopback)") {
			t.Errorf("remote with an authorized token: %d %q, want 403 naming the flag", code, body)
		}
		if n := g.api.requests.Load(); n != 0 {
			t.Errorf("%d requests to the API server, want none", n)
		}
	})
	t.Run("token from loopback too", func(t *testing.T) {
		g := newGuarded(t, debugauth.Options{Access: debugauth.AccessToken})
		if code, body := g.get("/debug/clusterz", "127.0.0.1:5000"); code != 401 || !strings.Contains(body, "need a bearer token") {
			t.Errorf("loopback without a token: %d %q, want 401", code, body)
		}
		if code, _ := g.get("/debug/clusterz", "127.0.0.1:5000", bearer(operator)...); code != 200 {
			t.Errorf("loopback with an authorized token: %d, want 200", code)
		}
	})
	t.Run("any audience of the API server", func(t *testing.T) {
		g := newGuarded(t, debugauth.Options{Audience: "-"})
		if code, body := g.get("/debug/clusterz", remote, bearer(operatorForAPIServer)...); code != 200 {
			t.Errorf("remote with a token for the API server: %d %q, want 200", code, body)
		}
		if code, _ := g.get("/debug/clusterz", remote, bearer(operator)...); code != 401 {
			t.Errorf("remote with a token for audience horizon only: %d, want 401", code)
		}
	})
}

// TestFilterBounds checks the bounds on what a caller controls: no review for an
// oversized token, one review of each kind per token and path within the cache's
// lifetime, and no more reviews in flight than allowed.
func TestFilterBounds(t *testing.T) {
	operator := token(t, "operator", debugauth.DefaultAudience)
	t.Run("oversized token", func(t *testing.T) {
		g := newGuarded(t, debugauth.Options{MaxTokenBytes: 16})
		if code, body := g.get("/debug/clusterz", remote, bearer(operator)...); code != 401 || !strings.Contains(body, "longer than 16 bytes") {
			t.Errorf("%d %q, want 401", code, body)
		}
		if n := g.api.requests.Load(); n != 0 {
			t.Errorf("%d requests to the API server for an oversized token, want none", n)
		}
	})
	t.Run("long path", func(t *testing.T) {
		g := newGuarded(t, debugauth.Options{})
		long := "/debug/" + strings.Repeat("x", debugauth.MaxPathBytes)
		if code, body := g.get(long, remote, bearer(operator)...); code != 400 || !strings.Contains(body, "path longer than 256 bytes") {
			t.Errorf("%d %q, want 400", code, body)
		}
		if n := g.api.requests.Load(); n != 0 {
			t.Errorf("%d requests to the API server for an overlong path, want none", n)
		}
		if code, _ := g.get(long, "127.0.0.1:5000"); code != 200 {
			t.Errorf("loopback, long path: %d, want 200 (the handler behind decides)", code)
		}
	})
	t.Run("cached reviews", func(t *testing.T) {
		g := newGuarded(t, debugauth.Options{})
		for range 5 {
			if code, _ := g.get("/debug/clusterz", remote, bearer(operator)...); code != 200 {
				t.Fatalf("%d, want 200", code)
			}
			if code, _ := g.get("/debug/syncz", remote, bearer(operator)...); code != 200 {
				t.Fatalf("%d, want 200", code)
			}
			if code, _ := g.get("/debug/clusterz", remote, bearer("garbage")...); code != 401 {
				t.Fatalf("%d, want 401", code)
			}
		}
		// One TokenReview per token, one SubjectAccessReview per path.
		if n := g.api.requests.Load(); n != 4 {
			t.Errorf("%d requests to the API server, want 4", n)
		}
	})
	t.Run("reviews in flight", func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		g := newGuarded(t, debugauth.Options{MaxConcurrentReviews: 1, ReviewWait: 1})
		var once sync.Once
		g.api.block = func() {
			once.Do(func() {
				close(entered)
				<-release
			})
		}
		first := make(chan int, 1)
		go func() {
			code, _ := g.get("/debug/clusterz", remote, bearer(operator)...)
			first <- code
		}()
		<-entered
		code, body := g.get("/debug/clusterz", remote, bearer("another")...)
		if code != http.StatusTooManyRequests || !strings.Contains(body, "1 token reviews in flight") {
			t.Errorf("second caller while a review is in flight: %d %q, want 429", code, body)
		}
		close(release)
		if code := <-first; code != 200 {
			t.Errorf("first caller: %d, want 200", code)
		}
		if got := counter(t, g.metrics, debugauth.OutcomeThrottled); got != 1 {
			t.Errorf("throttled = %v, want 1", got)
		}
		if got := series(t, g.metrics); got != 7 {
			t.Errorf("%d series of horizon_debug_requests_total, want the 7 outcomes", got)
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts debugauth.Options
		want string
	}{
		{"unknown access", debugauth.Options{Access: "open"}, `--debug-access: must be loopback-or-token, loopback or token, got "open"`},
		{"two audiences", debugauth.Options{Access: debugauth.AccessToken, Audience: "a,b"}, "--debug-token-audience"},
		{"negative bound", debugauth.Options{Access: debugauth.AccessToken, MaxTokenBytes: -1}, "MaxTokenBytes: must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := debugauth.New(tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := debugauth.New(debugauth.Options{Access: debugauth.AccessToken}); err == nil || !strings.Contains(err.Error(), "client is required") {
		t.Errorf("no client: %v", err)
	}
	if _, err := debugauth.New(debugauth.Options{Access: debugauth.AccessLoopback}); err != nil {
		t.Errorf("loopback only needs no client: %v", err)
	}
}
