package debugauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Access says who may call the guarded endpoints.
type Access string

const (
	// AccessLoopbackOrToken lets loopback callers through without a token, and
	// others with a token the config cluster authenticates and authorizes.
	AccessLoopbackOrToken Access = "loopback-or-token"
	// AccessLoopback lets loopback callers through and refuses every other.
	AccessLoopback Access = "loopback"
	// AccessToken wants an authenticated, authorized token from every caller, loopback
	// included: for a pod whose inbound traffic arrives from a proxy on loopback.
	AccessToken Access = "token"
)

// Defaults of the bounds.
const (
	DefaultAudience             = "horizon"
	DefaultCacheTTL             = 10 * time.Second
	DefaultCacheSize            = 1024
	DefaultMaxConcurrentReviews = 8
	DefaultReviewWait           = 2 * time.Second
	DefaultMaxTokenBytes        = 8192
)

// Options configures a Filter.
type Options struct {
	// Access is --debug-access.
	Access Access
	// Audience is --debug-token-audience: the audience a token must be issued for
	// (kubectl create token --audience). Empty: the config cluster's own audiences,
	// so that any token valid against its API server is accepted.
	Audience string
	// CacheTTL is how long a review's result is reused; 0: DefaultCacheTTL.
	CacheTTL time.Duration
	// CacheSize bounds each of the two caches (authentication, authorization) in
	// entries; 0: DefaultCacheSize.
	CacheSize int
	// MaxConcurrentReviews bounds the reviews in flight against the config cluster;
	// 0: DefaultMaxConcurrentReviews.
	MaxConcurrentReviews int
	// ReviewWait is how long a request waits for a review slot before it is refused
	// with 429; 0: DefaultReviewWait.
	ReviewWait time.Duration
	// MaxTokenBytes bounds the bearer token; 0: DefaultMaxTokenBytes.
	MaxTokenBytes int

	// Client reviews tokens and access in the config cluster. Required unless
	// Access is AccessLoopback.
	Client kubernetes.Interface
	// Logger logs refusals at debug level, never a token; nil: slog.Default().
	Logger *slog.Logger
	// Metrics, if set, gets horizon_debug_requests_total{outcome}.
	Metrics prometheus.Registerer
}

// AddFlags binds Access and Audience to --debug-access and --debug-token-audience.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar((*string)(&o.Access), "debug-access", string(AccessLoopbackOrToken),
		"who may call /debug/ on --http-address: loopback-or-token (loopback callers, and others with a bearer token the config cluster authenticates and authorizes for get on the path), loopback (loopback callers only), or token (every caller needs a token, e.g. behind a proxy on loopback); /healthz, /readyz and /metrics are always open")
	fs.StringVar(&o.Audience, "debug-token-audience", DefaultAudience,
		"audience a /debug/ bearer token must be issued for (kubectl create token --audience); empty: the config cluster's own audiences, so any token for its API server is accepted")
}

// Validate checks the values that come from flags.
func (o *Options) Validate() error {
	var errs []error
	switch o.Access {
	case AccessLoopbackOrToken, AccessLoopback, AccessToken:
	default:
		errs = append(errs, fmt.Errorf("--debug-access: must be %s, %s or %s, got %q", AccessLoopbackOrToken, AccessLoopback, AccessToken, o.Access))
	}
	if len(o.Audience) > 253 || strings.ContainsAny(o.Audience, " \t\r\n,") {
		errs = append(errs, fmt.Errorf("--debug-token-audience: must be one audience of at most 253 characters without spaces or commas, got %q", o.Audience))
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"CacheTTL", int64(o.CacheTTL)}, {"CacheSize", int64(o.CacheSize)}, {"MaxConcurrentReviews", int64(o.MaxConcurrentReviews)},
		{"ReviewWait", int64(o.ReviewWait)}, {"MaxTokenBytes", int64(o.MaxTokenBytes)}} {
		if n.v < 0 {
			errs = append(errs, fmt.Errorf("debug access %s: must not be negative", n.name))
		}
	}
	return errors.Join(errs...)
}

func (o *Options) withDefaults() Options {
	c := *o
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxConcurrentReviews == 0 {
		c.MaxConcurrentReviews = DefaultMaxConcurrentReviews
	}
	if c.ReviewWait == 0 {
		c.ReviewWait = DefaultReviewWait
	}
	if c.MaxTokenBytes == 0 {
		c.MaxTokenBytes = DefaultMaxTokenBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Outcomes of a request, the values of horizon_debug_requests_total's label.
const (
	OutcomeLoopback        = "loopback"        // a loopback caller, let through
	OutcomeAllowed         = "allowed"         // an authorized token
	OutcomeUnauthenticated = "unauthenticated" // no token, or one not accepted: 401
	OutcomeForbidden       = "forbidden"       // not authorized, or remote access off: 403
	OutcomeThrottled       = "throttled"       // too many reviews in flight: 429
	OutcomeUnavailable     = "unavailable"     // the config cluster did not answer: 503
	OutcomeBadRequest      = "bad_request"     // a path longer than MaxPathBytes: 400
)

var outcomes = []string{OutcomeLoopback, OutcomeAllowed, OutcomeUnauthenticated, OutcomeForbidden, OutcomeThrottled, OutcomeUnavailable, OutcomeBadRequest}

// MaxPathBytes bounds the path a caller other than loopback may ask for: each
// authorized path is a cache entry, and no debug path comes near it.
const MaxPathBytes = 256

// user is what a token authenticated as.
type user struct {
	ok   bool
	info authenticationv1.UserInfo
}

type cached[V any] struct {
	v       V
	expires time.Time
}

// Filter guards an http.Handler; see the package documentation.
type Filter struct {
	opts     Options
	log      *slog.Logger
	authn    *lru.Cache[[sha256.Size]byte, cached[user]]
	authz    *lru.Cache[authzKey, cached[bool]]
	slots    chan struct{}
	requests *prometheus.CounterVec
}

// authzKey is one token's request: the token's hash (the user it stands for within
// the cache's lifetime), the verb and the path.
type authzKey struct {
	token      [sha256.Size]byte
	verb, path string
}

// New builds a Filter from opts.
func New(opts Options) (*Filter, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	if o.Client == nil && o.Access != AccessLoopback {
		return nil, errors.New("debug access: a config-cluster client is required to review tokens")
	}
	// The plain LRU starts no goroutine (the expirable one starts one per cache that
	// never ends); entries carry their expiry and are checked on read.
	authn, err := lru.New[[sha256.Size]byte, cached[user]](o.CacheSize)
	if err != nil {
		return nil, err
	}
	authz, err := lru.New[authzKey, cached[bool]](o.CacheSize)
	if err != nil {
		return nil, err
	}
	f := &Filter{
		opts: o, log: o.Logger, authn: authn, authz: authz,
		slots: make(chan struct{}, o.MaxConcurrentReviews),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "horizon_debug_requests_total",
			Help: "Requests to the guarded HTTP endpoints (/debug/) by outcome.",
		}, []string{"outcome"}),
	}
	for _, oc := range outcomes {
		f.requests.WithLabelValues(oc)
	}
	if o.Metrics != nil {
		if err := o.Metrics.Register(f.requests); err != nil {
			return nil, fmt.Errorf("register debug access metrics: %w", err)
		}
	}
	return f, nil
}

// Wrap returns next guarded by f.
func (f *Filter) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outcome := f.check(w, r)
		f.requests.WithLabelValues(outcome).Inc()
		if outcome != OutcomeLoopback && outcome != OutcomeAllowed {
			return
		}
		// The handlers behind never see the token.
		r.Header.Del("Authorization")
		next.ServeHTTP(w, r)
	})
}

// IsLoopback reports whether remoteAddr (host:port, as http.Request.RemoteAddr) is
// a loopback address: 127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104.
func IsLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// check answers a refused request itself and returns the outcome.
func (f *Filter) check(w http.ResponseWriter, r *http.Request) string {
	// The connection's address, never X-Forwarded-For or X-Real-IP: whoever sends a
	// request can write those.
	if f.opts.Access != AccessToken && IsLoopback(r.RemoteAddr) {
		return OutcomeLoopback
	}
	if f.opts.Access == AccessLoopback {
		http.Error(w, "forbidden: "+r.URL.Path+" answers loopback callers only (horizon serve --debug-access=loopback)", http.StatusForbidden)
		return OutcomeForbidden
	}
	if len(r.URL.Path) > MaxPathBytes {
		http.Error(w, fmt.Sprintf("bad request: path longer than %d bytes", MaxPathBytes), http.StatusBadRequest)
		return OutcomeBadRequest
	}
	token, problem := bearerToken(r, f.opts.MaxTokenBytes)
	if problem != "" {
		f.unauthorized(w, problem)
		return OutcomeUnauthenticated
	}
	hash := sha256.Sum256([]byte(token))
	u, outcome := f.authenticate(r.Context(), w, hash, token)
	if outcome != "" {
		return outcome
	}
	if !u.ok {
		f.unauthorized(w, "the bearer token was not accepted by the config cluster (expired, revoked, malformed, or not issued for audience "+f.audienceText()+")")
		f.log.Debug("debug request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", "token not authenticated")
		return OutcomeUnauthenticated
	}
	verb := verbOf(r.Method)
	allowed, outcome := f.authorize(r.Context(), w, authzKey{token: hash, verb: verb, path: r.URL.Path}, u.info)
	if outcome != "" {
		return outcome
	}
	if !allowed {
		http.Error(w, fmt.Sprintf("forbidden: user %q may not %s %s (grant %q on nonResourceURLs %q, e.g. by binding ClusterRole horizon-debug)",
			u.info.Username, verb, r.URL.Path, verb, r.URL.Path), http.StatusForbidden)
		f.log.Debug("debug request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "user", u.info.Username, "reason", "not authorized")
		return OutcomeForbidden
	}
	return OutcomeAllowed
}

func (f *Filter) audienceText() string {
	if f.opts.Audience == "" {
		return "of the config cluster's API server"
	}
	return fmt.Sprintf("%q", f.opts.Audience)
}

func (f *Filter) unauthorized(w http.ResponseWriter, problem string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="horizon"`)
	http.Error(w, "unauthorized: "+problem, http.StatusUnauthorized)
}

// bearerToken returns the request's bearer token, or why there is none usable.
func bearerToken(r *http.Request, maxBytes int) (string, string) {
	const need = "callers other than loopback need a bearer token (Authorization: Bearer <token>; horizon status --token-file)"
	values := r.Header.Values("Authorization")
	switch {
	case len(values) == 0:
		return "", need
	case len(values) > 1:
		return "", "more than one Authorization header"
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", "the Authorization header is not a bearer token; " + need
	}
	token = strings.TrimSpace(token)
	switch {
	case token == "":
		return "", "empty bearer token"
	case len(token) > maxBytes:
		return "", fmt.Sprintf("bearer token longer than %d bytes", maxBytes)
	}
	return token, ""
}

// verbOf is the verb Kubernetes authorizes a non-resource request by: the lowercase
// HTTP method, get for HEAD.
func verbOf(method string) string {
	if method == http.MethodHead {
		return "get"
	}
	return strings.ToLower(method)
}

// authenticate returns what token authenticates as, from the cache or a TokenReview.
// On failure it answers the request and returns the outcome.
func (f *Filter) authenticate(ctx context.Context, w http.ResponseWriter, hash [sha256.Size]byte, token string) (user, string) {
	if c, ok := f.authn.Get(hash); ok && time.Now().Before(c.expires) {
		return c.v, ""
	}
	if outcome := f.acquire(ctx, w); outcome != "" {
		return user{}, outcome
	}
	defer f.release()
	review := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}
	if f.opts.Audience != "" {
		review.Spec.Audiences = []string{f.opts.Audience}
	}
	res, err := f.opts.Client.AuthenticationV1().TokenReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		// The error is client-go's about the config cluster; it never holds the
		// request's body, so never the token.
		f.log.Error("review debug token", "err", err)
		http.Error(w, "service unavailable: cannot review the token with the config cluster; retry", http.StatusServiceUnavailable)
		return user{}, OutcomeUnavailable
	}
	u := user{ok: res.Status.Authenticated && res.Status.Error == "", info: res.Status.User}
	// A token accepted for other audiences than the one asked for is not accepted.
	if f.opts.Audience != "" && !slices.Contains(res.Status.Audiences, f.opts.Audience) {
		u = user{}
	}
	f.authn.Add(hash, cached[user]{v: u, expires: time.Now().Add(f.opts.CacheTTL)})
	return u, ""
}

// authorize says whether the user may make the request, from the cache or a
// SubjectAccessReview. On failure it answers the request and returns the outcome.
func (f *Filter) authorize(ctx context.Context, w http.ResponseWriter, key authzKey, u authenticationv1.UserInfo) (bool, string) {
	if c, ok := f.authz.Get(key); ok && time.Now().Before(c.expires) {
		return c.v, ""
	}
	if outcome := f.acquire(ctx, w); outcome != "" {
		return false, outcome
	}
	defer f.release()
	extra := make(map[string]authorizationv1.ExtraValue, len(u.Extra))
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	res, err := f.opts.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: key.path, Verb: key.verb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		f.log.Error("review debug access", "user", u.Username, "path", key.path, "err", err)
		http.Error(w, "service unavailable: cannot review access with the config cluster; retry", http.StatusServiceUnavailable)
		return false, OutcomeUnavailable
	}
	allowed := res.Status.Allowed && !res.Status.Denied
	f.authz.Add(key, cached[bool]{v: allowed, expires: time.Now().Add(f.opts.CacheTTL)})
	return allowed, ""
}

// acquire takes a review slot, waiting at most ReviewWait; when none frees up it
// answers 429 and returns the outcome.
func (f *Filter) acquire(ctx context.Context, w http.ResponseWriter) string {
	select {
	case f.slots <- struct{}{}:
		return ""
	default:
	}
	t := time.NewTimer(f.opts.ReviewWait)
	defer t.Stop()
	select {
	case f.slots <- struct{}{}:
		return ""
	case <-t.C:
	case <-ctx.Done():
	}
	w.Header().Set("Retry-After", "1")
	http.Error(w, fmt.Sprintf("too many requests: %d token reviews in flight; retry", f.opts.MaxConcurrentReviews), http.StatusTooManyRequests)
	return OutcomeThrottled
}

func (f *Filter) release() { <-f.slots }
