package secrets_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/secrets"
)

const (
	namespace = "istio-system"
	configID  = network.ClusterID("config")
	// timeout bounds every wait for the controller.
	timeout = 10 * time.Second
	// secretMarker is part of every credential the tests use and of the unparseable
	// kubeconfig; it must never reach a log line or a status.
	secretMarker = "s3cr3t"
	// barrierPrefix names the Secrets the harness writes to know the controller has
	// caught up; the checks leave them out.
	barrierPrefix = "zz-barrier-"
)

// remote is a cluster reached with a bearer-token kubeconfig.
type remote struct {
	host, token string
	kubeconfig  []byte
}

func newRemote(host, token string) remote {
	return remote{host: host, token: token, kubeconfig: kubeconfigWithUser(host, "    token: "+token+"\n")}
}

// kubeconfigWithUser returns a kubeconfig for server whose one user is given as YAML
// indented under "user:".
func kubeconfigWithUser(server, user string) []byte {
	return []byte(`apiVersion: v1
kind: Config
current-context: remote
contexts:
- name: remote
  context: {cluster: remote, user: remote}
clusters:
- name: remote
  cluster:
    server: ` + server + `
users:
- name: remote
  user:
` + user)
}

var (
	remoteA        = newRemote("https://a.example:6443", secretMarker+"-a")
	remoteARotated = newRemote("https://a.example:6443", secretMarker+"-a-rotated")
	remoteB        = newRemote("https://b.example:6443", secretMarker+"-b")
)

// kv is the data of a remote Secret: cluster ID → kubeconfig.
type kv = map[string][]byte

// remoteSecret returns a Secret carrying the remote-secret label.
func remoteSecret(name string, data kv) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: namespace,
			Labels: map[string]string{network.LabelMultiCluster: "true"},
		},
		Data: data,
	}
}

// call is one thing the controller told its handler.
type call struct {
	op      string // "set" or "remove"
	cluster network.ClusterID
	source  string // set only
	host    string // set only: the client config's server
	token   string // set only: the client config's bearer token
}

func set(cluster network.ClusterID, secret string, r remote) call {
	return call{op: "set", cluster: cluster, source: fmt.Sprintf("%s/%s[%s]", namespace, secret, cluster), host: r.host, token: r.token}
}

func remove(cluster network.ClusterID) call { return call{op: "remove", cluster: cluster} }

// recorder is the ClusterHandler under test: it records every call, the calls made
// before the controller reported synced, and whether two calls ever overlapped (the
// controller promises one at a time).
type recorder struct {
	synced   func() bool // the controller's HasSynced; set before it runs
	mu       sync.Mutex
	calls    []call
	early    []call // made while synced() was false
	busy     atomic.Bool
	overlaps atomic.Int32
}

var _ secrets.ClusterHandler = (*recorder)(nil)

func (r *recorder) SetCluster(id network.ClusterID, source string, cfg *rest.Config) {
	r.record(call{op: "set", cluster: id, source: source, host: cfg.Host, token: cfg.BearerToken})
}

func (r *recorder) RemoveCluster(id network.ClusterID) {
	r.record(call{op: "remove", cluster: id})
}

func (r *recorder) record(c call) {
	if !r.busy.CompareAndSwap(false, true) {
		r.overlaps.Add(1)
	}
	defer r.busy.Store(false)
	early := !r.synced()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	if early {
		r.early = append(r.early, c)
	}
}

// beforeSync returns the calls made before the controller reported synced.
func (r *recorder) beforeSync() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.early)
}

// since returns the calls after the first n.
func (r *recorder) since(n int) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls[n:])
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// sameCalls compares handler calls cluster by cluster: the order of calls for one
// cluster matters (remove, then set by the next claimant), the interleaving of
// different clusters does not.
func sameCalls(got, want []call) error {
	byCluster := func(calls []call) map[network.ClusterID][]call {
		m := map[network.ClusterID][]call{}
		for _, c := range calls {
			m[c.cluster] = append(m[c.cluster], c)
		}
		return m
	}
	if !maps.EqualFunc(byCluster(got), byCluster(want), slices.Equal) {
		return fmt.Errorf("handler calls %+v, want %+v", got, want)
	}
	return nil
}

// logRecord is one log line with its attributes (the logger's own included).
type logRecord struct {
	msg   string
	attrs map[string]string
}

type logSink struct {
	mu      sync.Mutex
	records []logRecord
}

// sinkHandler is a slog.Handler writing to a logSink.
type sinkHandler struct {
	sink  *logSink
	attrs []slog.Attr
}

func (h *sinkHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *sinkHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	h.sink.records = append(h.sink.records, rec)
	return nil
}

func (h *sinkHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sinkHandler{sink: h.sink, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h *sinkHandler) WithGroup(string) slog.Handler { return h }

// all returns the log lines, except those about barrier Secrets.
func (s *logSink) all() []logRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logRecord
	for _, r := range s.records {
		if !strings.HasPrefix(r.attrs["secret"], namespace+"/"+barrierPrefix) {
			out = append(out, r)
		}
	}
	return out
}

func (s *logSink) count(msg string) int {
	n := 0
	for _, r := range s.all() {
		if r.msg == msg {
			n++
		}
	}
	return n
}

// harness runs a Controller against a fake config cluster until the test ends.
type harness struct {
	client   *fake.Clientset
	server   *apiServer
	ctrl     *secrets.Controller
	handler  *recorder
	logs     *logSink
	rv       int // the last ResourceVersion handed out
	barriers int // barrier Secrets written so far
}

// start runs a controller over the given Secrets and returns once it reports synced
// and watches for changes, with the handler calls made before HasSynced reported
// true. The controller stops, and is waited for, when the test ends.
func start(t *testing.T, initial ...*corev1.Secret) (*harness, []call) {
	t.Helper()
	return startWith(t, nil, initial...)
}

// startWith is start with options changed by configure (when not nil).
func startWith(t *testing.T, configure func(*secrets.Options), initial ...*corev1.Secret) (*harness, []call) {
	t.Helper()
	h := &harness{handler: &recorder{}, logs: &logSink{}}
	objs := make([]runtime.Object, 0, len(initial))
	for _, s := range initial {
		objs = append(objs, h.stamp(s))
	}
	h.client = fake.NewClientset(objs...)
	h.server = newAPIServer(h.client)
	opts := secrets.Options{
		Client:    h.client,
		Handler:   h.handler,
		Namespace: namespace,
		ClusterID: configID,
		Logger:    slog.New(&sinkHandler{sink: h.logs}),
	}
	if configure != nil {
		configure(&opts)
	}
	ctrl, err := secrets.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.ctrl = ctrl
	h.handler.synced = ctrl.HasSynced
	runController(t, t.Context(), ctrl)
	kubetest.Eventually(t, timeout, func() error {
		if !ctrl.HasSynced() {
			return errors.New("controller not synced")
		}
		return nil
	})
	kubetest.Eventually(t, timeout, func() error {
		if h.server.watchesOpened() == 0 {
			return errors.New("controller not watching Secrets yet")
		}
		return nil
	})
	return h, h.handler.beforeSync()
}

// runController runs ctrl.Run(ctx) and, when the test ends, fails it if Run has not
// returned (its goroutines joined) within the timeout.
func runController(t *testing.T, ctx context.Context, ctrl *secrets.Controller) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctrl.Run(ctx)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		case <-time.After(timeout):
			t.Error("Run did not return after its context ended")
		}
	})
	return done
}

// stamp returns a copy of s with a new ResourceVersion, as the API server gives
// every write (the fake clientset does not).
func (h *harness) stamp(s *corev1.Secret) *corev1.Secret {
	s = s.DeepCopy()
	h.rv++
	s.ResourceVersion = strconv.Itoa(h.rv)
	return s
}

// action changes Secrets in the config cluster.
type action func(t *testing.T, h *harness)

// apply creates or replaces a Secret.
func apply(s *corev1.Secret) action {
	return func(t *testing.T, h *harness) {
		t.Helper()
		h.write(t, h.stamp(s))
	}
}

func (h *harness) write(t *testing.T, s *corev1.Secret) {
	t.Helper()
	client := h.client.CoreV1().Secrets(s.Namespace)
	_, err := client.Update(t.Context(), s, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		_, err = client.Create(t.Context(), s, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("write Secret %s/%s: %v", s.Namespace, s.Name, err)
	}
}

// del deletes a Secret.
func del(name string) action {
	return func(t *testing.T, h *harness) {
		t.Helper()
		if err := h.client.CoreV1().Secrets(namespace).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete Secret %s: %v", name, err)
		}
	}
}

// touch writes a Secret again with its data unchanged and a new annotation, so that
// it has a new ResourceVersion.
func touch(name string) action {
	return func(t *testing.T, h *harness) {
		t.Helper()
		s := h.get(t, name)
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations["touched"] = strconv.Itoa(h.rv)
		h.write(t, h.stamp(s))
	}
}

// resync delivers a Secret again exactly as it is, ResourceVersion included, as an
// informer resync does.
func resync(name string) action {
	return func(t *testing.T, h *harness) {
		t.Helper()
		h.write(t, h.get(t, name))
	}
}

// whileDisconnected takes the actions while the controller's watch is broken, then
// waits for the informer to relist and watch again.
func whileDisconnected(actions ...action) action {
	return func(t *testing.T, h *harness) {
		t.Helper()
		opened := h.server.watchesOpened()
		h.server.disconnect()
		all(actions...)(t, h)
		h.server.reconnect()
		kubetest.Eventually(t, timeout, func() error {
			if h.server.watchesOpened() == opened {
				return errors.New("controller not watching Secrets again yet")
			}
			return nil
		})
	}
}

func all(actions ...action) action {
	return func(t *testing.T, h *harness) {
		t.Helper()
		for _, a := range actions {
			a(t, h)
		}
	}
}

func (h *harness) get(t *testing.T, name string) *corev1.Secret {
	t.Helper()
	s, err := h.client.CoreV1().Secrets(namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Secret %s: %v", name, err)
	}
	return s
}

// barrier returns once the controller has handled every Secret change made before
// it. The informer delivers changes in order and the one worker takes them in that
// order, so once a new Secret shows in Status, everything written earlier has been
// handled. Its one key names the config cluster, so it causes no handler call.
func (h *harness) barrier(t *testing.T) {
	t.Helper()
	h.barriers++
	name := barrierPrefix + strconv.Itoa(h.barriers)
	apply(remoteSecret(name, kv{string(configID): []byte("x")}))(t, h)
	kubetest.Eventually(t, timeout, func() error {
		for _, s := range h.ctrl.Status() {
			if s.Secret == namespace+"/"+name {
				return nil
			}
		}
		return fmt.Errorf("barrier Secret %s not handled yet", name)
	})
}

// status returns the controller's status without the barrier Secrets.
func (h *harness) status() []secrets.KeyStatus {
	var out []secrets.KeyStatus
	for _, s := range h.ctrl.Status() {
		if !strings.HasPrefix(s.Secret, namespace+"/"+barrierPrefix) {
			out = append(out, s)
		}
	}
	return out
}

// events returns the controller's event counts without those of the barrier Secrets
// (one "ignored" each).
func (h *harness) events() map[string]uint64 {
	ev := h.ctrl.Events()
	if ev == nil {
		ev = map[string]uint64{}
	}
	ev["ignored"] -= uint64(h.barriers)
	return ev
}

// key is the status wanted for one data key.
type key struct {
	secret, key string
	state       secrets.KeyState
	err         string // part of the status error; empty: no error
}

func accepted(secret, k string) key { return key{secret: secret, key: k, state: secrets.KeyAccepted} }
func rejected(secret, k, err string) key {
	return key{secret: secret, key: k, state: secrets.KeyRejected, err: err}
}
func duplicate(secret, k, err string) key {
	return key{secret: secret, key: k, state: secrets.KeyDuplicate, err: err}
}
func tooMany(secret, err string) key {
	return key{secret: secret, state: secrets.KeyTooMany, err: err}
}
func waitingForRoom(secret, k string) key {
	return key{secret: secret, key: k, state: secrets.KeyTooManyClusters, err: "the limit (--remote-max-clusters); waiting until one is removed"}
}
func ignored(secret, k, err string) key {
	return key{secret: secret, key: k, state: secrets.KeyIgnored, err: err}
}

// checkStatus compares the status of every key with want (sorted by Secret and key).
// A rejected key's status must name the Secret and key, and give the reason it was
// logged with.
func (h *harness) checkStatus(want []key) error {
	got := h.status()
	if len(got) != len(want) {
		return fmt.Errorf("status %+v, want %+v", got, want)
	}
	for i, w := range want {
		g := got[i]
		if g.Secret != namespace+"/"+w.secret || g.Key != w.key || g.Cluster != network.ClusterID(w.key) || g.State != w.state {
			return fmt.Errorf("status[%d] = %+v, want %+v", i, g, w)
		}
		if (w.err == "") != (g.Error == "") || !strings.Contains(g.Error, w.err) {
			return fmt.Errorf("status[%d] error %q, want %q", i, g.Error, w.err)
		}
		if g.Updated.IsZero() {
			return fmt.Errorf("status[%d] has no update time", i)
		}
		if w.state != secrets.KeyRejected {
			continue
		}
		prefix := fmt.Sprintf("secret %s key %q: ", g.Secret, g.Key)
		if !strings.HasPrefix(g.Error, prefix) {
			return fmt.Errorf("status[%d] error %q does not start with %q", i, g.Error, prefix)
		}
		logged := false
		for _, r := range h.logs.all() {
			if r.msg == "remote kubeconfig rejected" && r.attrs["secret"] == g.Secret && r.attrs["key"] == g.Key &&
				r.attrs["cluster"] == g.Key && r.attrs["error"] != "" && strings.Contains(g.Error, r.attrs["error"]) {
				logged = true
			}
		}
		if !logged {
			return fmt.Errorf("no log line says why %s[%s] was rejected (%q)", g.Secret, g.Key, w.err)
		}
	}
	return nil
}

// checkNoSecrets fails the test if a credential reached a log line or a status.
func (h *harness) checkNoSecrets(t *testing.T) {
	t.Helper()
	for _, r := range h.logs.all() {
		if strings.Contains(fmt.Sprint(r), secretMarker) {
			t.Errorf("log line quotes a kubeconfig: %+v", r)
		}
	}
	for _, s := range h.ctrl.Status() {
		if strings.Contains(fmt.Sprint(s), secretMarker) {
			t.Errorf("status quotes a kubeconfig: %+v", s)
		}
	}
}

// apiServer makes the fake clientset's Secret lists and watches behave as the API
// server's do where the controller depends on it:
//   - a watch honours its label selector (the fake's lists already do): an object that
//     does not match is not seen, and one that stops matching is seen as deleted;
//   - a disconnection ends every watch with "resource version too old" and fails lists
//     and watches until reconnected, so that the informer relists.
type apiServer struct {
	client *fake.Clientset
	down   atomic.Bool

	mu      sync.Mutex
	watches []*selectedWatch // guarded by mu; every watch opened
}

var errUnavailable = apierrors.NewServiceUnavailable("config cluster disconnected")

func newAPIServer(cs *fake.Clientset) *apiServer {
	s := &apiServer{client: cs}
	cs.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if s.down.Load() {
			return true, nil, errUnavailable
		}
		return false, nil, nil
	})
	cs.PrependWatchReactor("secrets", func(action k8stesting.Action) (bool, watch.Interface, error) {
		if s.down.Load() {
			return true, nil, errUnavailable
		}
		wa, ok := action.(k8stesting.WatchActionImpl)
		if !ok {
			return false, nil, nil
		}
		sel, err := labels.Parse(wa.ListOptions.LabelSelector)
		if err != nil {
			return true, nil, err
		}
		in, err := cs.Tracker().Watch(action.GetResource(), action.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		w := newSelectedWatch(in, sel)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.watches = append(s.watches, w)
		return true, w, nil
	})
	return s
}

// watchesOpened counts the watches opened so far. A write made before the informer's
// first watch opens could fall between its list and its watch, which the fake would
// not replay.
func (s *apiServer) watchesOpened() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.watches)
}

// disconnect ends every watch and fails lists and watches until reconnect.
func (s *apiServer) disconnect() {
	s.down.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.watches {
		w.expire()
	}
}

func (s *apiServer) reconnect() { s.down.Store(false) }

// selectedWatch passes on the events of a watch that concern objects matching a
// label selector.
type selectedWatch struct {
	in      watch.Interface
	out     chan watch.Event
	stop    chan struct{}
	once    sync.Once
	expired atomic.Bool
}

func newSelectedWatch(in watch.Interface, sel labels.Selector) *selectedWatch {
	w := &selectedWatch{in: in, out: make(chan watch.Event), stop: make(chan struct{})}
	go w.loop(sel)
	return w
}

func (w *selectedWatch) ResultChan() <-chan watch.Event { return w.out }

func (w *selectedWatch) Stop() {
	w.once.Do(func() {
		close(w.stop)
		w.in.Stop()
	})
}

// expire ends the watch as the API server does when the watcher has fallen too far
// behind: no further event, then a "410 Gone: too old resource version" error.
func (w *selectedWatch) expire() {
	w.expired.Store(true)
	w.in.Stop()
}

func (w *selectedWatch) loop(sel labels.Selector) {
	defer close(w.out)
	for {
		var ev watch.Event
		select {
		case <-w.stop:
			return
		case e, ok := <-w.in.ResultChan():
			if !ok {
				if w.expired.Load() {
					w.send(watch.Event{Type: watch.Error, Object: &apierrors.NewResourceExpired("too old resource version").ErrStatus})
				}
				return
			}
			ev = e
		}
		if m, err := meta.Accessor(ev.Object); err == nil && !sel.Matches(labels.Set(m.GetLabels())) {
			if ev.Type != watch.Modified {
				continue
			}
			ev.Type = watch.Deleted // it left the selection
		}
		if !w.send(ev) {
			return
		}
	}
}

func (w *selectedWatch) send(ev watch.Event) bool {
	select {
	case w.out <- ev:
		return true
	case <-w.stop:
		return false
	}
}
