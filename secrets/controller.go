package secrets

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/horizon-mesh/horizon/network"
)

// ClusterHandler is told which remote clusters exist. It is implemented by the
// cluster registry.
type ClusterHandler interface {
	// SetCluster adds cluster id, or replaces its client config when the kubeconfig
	// changed. source names where the config came from ("namespace/secret[key]"). It
	// must return promptly; connecting and syncing happen in the background.
	SetCluster(id network.ClusterID, source string, cfg *rest.Config)
	// RemoveCluster removes cluster id and everything learned from it.
	RemoveCluster(id network.ClusterID)
}

// SelectorHandler is implemented by a ClusterHandler that scopes what it watches in
// each cluster (the cluster registry). A remote Secret's AnnotationDiscoverySelectors
// replaces the mesh's discovery selectors for the clusters of that Secret.
type SelectorHandler interface {
	// SetClusterDiscoverySelectors gives cluster id selectors of its own (override),
	// or the mesh's again (not override). It is called before SetCluster, and again
	// whenever the Secret is seen.
	SetClusterDiscoverySelectors(id network.ClusterID, sel *network.DiscoverySelectors, override bool)
}

// Options configures a Controller.
type Options struct {
	// Client reaches the config cluster, where remote Secrets live.
	Client kubernetes.Interface
	// Handler learns of cluster changes.
	Handler ClusterHandler
	// Namespace is the system namespace. Remote Secrets are read there unless
	// SecretsNamespace names another.
	Namespace string
	// SecretsNamespace is where remote Secrets are read: a namespace of their own lets
	// Horizon read them without reading every Secret of the system namespace. Namespace
	// when empty.
	SecretsNamespace string
	// ClusterID is the config cluster's own ID; a remote Secret key naming it is ignored.
	ClusterID network.ClusterID
	// Load says what a remote kubeconfig may use.
	Load LoadOptions
	// MaxKeysPerSecret bounds the data keys (clusters) of one remote Secret: a Secret
	// with more is refused as a whole (state KeyTooMany) and its changes are not
	// applied; clusters it already had keep serving. 100 when zero.
	MaxKeysPerSecret int
	// MaxClusters bounds the remote clusters of all Secrets together. A key that would
	// add a cluster past it is refused (state KeyTooManyClusters) and waits: clusters
	// already added keep serving, credential changes still apply, and once a cluster
	// is removed the waiting keys are taken in Secret and key order. 256 when zero.
	MaxClusters int
	// ExpiryWarning is how long before a remote credential expires that its key is
	// shown as expiring (CredentialExpiring) and a warning is logged. 0 turns the
	// warning off; the expired state stays.
	ExpiryWarning time.Duration
	// Logger receives the controller's log lines; slog.Default() when nil.
	Logger *slog.Logger
	// Clock tells the time for credential expiry; the real clock when nil. Tests
	// inject a fake one.
	Clock clock.WithTicker
}

// AddFlags binds the options that come from the command line.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Namespace, "namespace", "istio-system", "system namespace holding remote secrets (label "+network.LabelMultiCluster+"=true)")
	fs.StringVar((*string)(&o.ClusterID), "cluster-id", "Kubernetes", "ID of the cluster Horizon runs in; a remote secret key with this ID is ignored")
	fs.BoolVar(&o.Load.AllowFilePaths, "allow-kubeconfig-file-paths", false, "let remote kubeconfigs name local files (tokenFile, certificate and key files); unsafe with untrusted secrets")
	fs.StringVar(&o.SecretsNamespace, "remote-secrets-namespace", "", "namespace holding remote secrets, when not --namespace: Horizon then needs Secret access there only")
	fs.IntVar(&o.MaxKeysPerSecret, "remote-max-keys-per-secret", DefaultMaxKeysPerSecret, "most data keys (remote clusters) one remote secret may hold; a secret with more is refused")
	fs.IntVar(&o.MaxClusters, "remote-max-clusters", DefaultMaxClusters, "most remote clusters over all remote secrets; keys past it wait (state too-many-clusters) until clusters are removed")
	fs.BoolVar(&o.Load.RefuseLoopback, "remote-refuse-loopback", false, "refuse remote kubeconfigs whose server is, or resolves to, a loopback address (safe in a pod; local test clusters listen on loopback)")
	fs.BoolVar(&o.Load.AllowInsecureSkipTLSVerify, "remote-allow-insecure-skip-tls-verify", false, "let remote kubeconfigs set insecure-skip-tls-verify (no server certificate check); unsafe with untrusted secrets")
	fs.BoolVar(&o.Load.AllowHTTP, "remote-allow-http", false, "let remote kubeconfigs name an http:// server (credentials sent in clear); unsafe with untrusted secrets")
	fs.BoolVar(&o.Load.AllowProxyURL, "remote-allow-proxy-url", false, "let remote kubeconfigs set proxy-url (Horizon connects through a proxy the secret names); unsafe with untrusted secrets")
	fs.DurationVar(&o.ExpiryWarning, "credential-expiry-warning", DefaultExpiryWarning,
		"how long before a remote credential (token exp claim or client certificate) expires to show it as expiring and log a warning; 0: no warning")
}

// Validate checks the values that come from flags; New also checks the wiring.
func (o *Options) Validate() error {
	var errs []error
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace: must not be empty"))
	}
	if o.ClusterID == "" {
		errs = append(errs, errors.New("--cluster-id: must not be empty"))
	}
	if o.MaxKeysPerSecret < 0 {
		errs = append(errs, errors.New("--remote-max-keys-per-secret: must not be negative"))
	}
	if o.MaxClusters < 0 {
		errs = append(errs, errors.New("--remote-max-clusters: must not be negative"))
	}
	if o.ExpiryWarning < 0 || o.ExpiryWarning > MaxExpiryWarning {
		errs = append(errs, fmt.Errorf("--credential-expiry-warning %s: must be between 0 and %s", o.ExpiryWarning, MaxExpiryWarning))
	}
	if o.SecretsNamespace != "" {
		if msgs := validation.IsDNS1123Label(o.SecretsNamespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--remote-secrets-namespace %q: %s", o.SecretsNamespace, strings.Join(msgs, "; ")))
		}
	}
	return errors.Join(errs...)
}

// DefaultMaxKeysPerSecret is Options.MaxKeysPerSecret when unset.
const DefaultMaxKeysPerSecret = 100

// DefaultMaxClusters is Options.MaxClusters when unset.
const DefaultMaxClusters = 256

// DefaultExpiryWarning is the --credential-expiry-warning default: a week.
const DefaultExpiryWarning = 7 * 24 * time.Hour

// MaxExpiryWarning bounds Options.ExpiryWarning: a year.
const MaxExpiryWarning = 366 * 24 * time.Hour

// expiryCheckInterval is how often credential expiries are checked for a warning to
// log; statuses are computed when asked.
const expiryCheckInterval = time.Minute

// secretsNamespace is where remote Secrets are read.
func (o *Options) secretsNamespace() string {
	if o.SecretsNamespace != "" {
		return o.SecretsNamespace
	}
	return o.Namespace
}

// KeyState is the outcome for one data key of a remote Secret.
type KeyState string

const (
	// KeyAccepted: the kubeconfig loaded and its cluster was handed to the registry.
	KeyAccepted KeyState = "accepted"
	// KeyRejected: the kubeconfig is unusable; Error says why. If an earlier
	// kubeconfig for the same key was accepted, that cluster keeps serving.
	KeyRejected KeyState = "rejected"
	// KeyDuplicate: another Secret already claims this cluster ID.
	KeyDuplicate KeyState = "duplicate"
	// KeyIgnored: the key names the config cluster itself.
	KeyIgnored KeyState = "ignored"
	// KeyTooMany: the whole Secret is refused for holding more keys than
	// Options.MaxKeysPerSecret; its status has an empty Key. Its changes are not
	// applied; clusters it had before keep serving.
	KeyTooMany KeyState = "too-many-keys"
	// KeyTooManyClusters: the kubeconfig is usable, but Options.MaxClusters remote
	// clusters exist already; the key waits until one is removed.
	KeyTooManyClusters KeyState = "too-many-clusters"
	// KeyInvalidSelectors: the whole Secret is refused because its
	// network.AnnotationDiscoverySelectors is invalid; its status has an empty Key
	// and Error names the field. Its changes are not applied; clusters it had before
	// keep serving, with the selectors they had.
	KeyInvalidSelectors KeyState = "invalid-discovery-selectors"
)

// KeyStatus describes one data key of one remote Secret. It never holds kubeconfig
// contents.
type KeyStatus struct {
	Secret  string            `json:"secret"` // namespace/name
	Key     string            `json:"key"`
	Cluster network.ClusterID `json:"cluster"`
	State   KeyState          `json:"state"`
	Error   string            `json:"error,omitempty"`
	Updated time.Time         `json:"updated"`
	// CredentialExpiry is when the credential of the kubeconfig last handed to the
	// registry for this key expires (a token's exp claim, or the earliest NotAfter of
	// the client certificate chain); zero when it cannot be read or no kubeconfig of
	// this key was accepted. A later kubeconfig that is rejected does not change it:
	// the cluster keeps the previous credential.
	CredentialExpiry time.Time `json:"credentialExpiry,omitzero"`
	// CredentialSource is what the expiry was read from: "token" or
	// "client-certificate".
	CredentialSource string `json:"credentialSource,omitempty"`
	// CredentialState is CredentialExpiry judged at the time of the status; empty for
	// a key whose cluster was never handed to the registry.
	CredentialState CredentialState `json:"credentialState,omitempty"`
}

// keyRecord is what the worker remembers of one data key.
type keyRecord struct {
	status   KeyStatus
	hash     [sha256.Size]byte // of the kubeconfig last handed to the handler
	rejected [sha256.Size]byte // of the kubeconfig last refused
	active   bool              // this key's cluster is registered with the handler
}

// Controller watches remote Secrets and keeps the handler's clusters in step with them.
type Controller struct {
	opts     Options
	log      *slog.Logger
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   listersv1.SecretLister
	queue    workqueue.TypedRateLimitingInterface[types.NamespacedName] // made by Run

	// Owned by the worker goroutine.
	owners  map[network.ClusterID]types.NamespacedName     // cluster ID → Secret that claims it
	keys    map[types.NamespacedName]map[string]*keyRecord // Secret → data key → record
	tooMany map[types.NamespacedName]KeyStatus             // Secrets refused as a whole: too many keys, invalid selectors

	mu          sync.Mutex
	status      []KeyStatus            // guarded by mu; a snapshot rebuilt after each change
	initialDone bool                   // guarded by mu
	events      map[string]uint64      // guarded by mu; outcomes of key changes
	refusals    map[RefusalKind]uint64 // guarded by mu; refused kubeconfigs by kind

	// kick wakes the expiry checker after a change of statuses.
	kick chan struct{}
}

// New returns a Controller; Run starts it.
func New(opts Options) (*Controller, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Client == nil || opts.Handler == nil {
		return nil, errors.New("secrets: a config-cluster client and a cluster handler are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxKeysPerSecret == 0 {
		opts.MaxKeysPerSecret = DefaultMaxKeysPerSecret
	}
	if opts.MaxClusters == 0 {
		opts.MaxClusters = DefaultMaxClusters
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	selector := network.LabelMultiCluster + "=true"
	factory := informers.NewSharedInformerFactoryWithOptions(opts.Client, 0,
		informers.WithNamespace(opts.secretsNamespace()),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = selector }))
	si := factory.Core().V1().Secrets()
	c := &Controller{
		opts:     opts,
		log:      opts.Logger.With("component", "secrets"),
		factory:  factory,
		informer: si.Informer(),
		lister:   si.Lister(),
		owners:   map[network.ClusterID]types.NamespacedName{},
		keys:     map[types.NamespacedName]map[string]*keyRecord{},
		tooMany:  map[types.NamespacedName]KeyStatus{},
		kick:     make(chan struct{}, 1),
	}
	_, err := c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueue,
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Secret)
			n, ok2 := cur.(*corev1.Secret)
			if ok1 && ok2 && o.ResourceVersion == n.ResourceVersion {
				return // periodic resync, nothing changed
			}
			c.enqueue(cur)
		},
		DeleteFunc: c.enqueue,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Controller) enqueue(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	c.queue.Add(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
}

// Run watches Secrets until ctx is done, then stops the informer and the worker and
// returns. It does not remove the clusters it added: the caller owns their lifetime.
func (c *Controller) Run(ctx context.Context) {
	// The queue starts a goroutine of its own: made here rather than in New, so that a
	// controller that is never run leaves nothing behind. The event handlers that use
	// it run only once the factory is started below.
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "remote-secrets"})
	var wg sync.WaitGroup
	defer func() {
		c.queue.ShutDown()
		c.factory.Shutdown()
		wg.Wait()
	}()
	c.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return
	}
	// Process every Secret present at start before reporting synced, so that the
	// registry knows every remote cluster before readiness is judged.
	secrets, err := c.lister.Secrets(c.opts.secretsNamespace()).List(labels.Everything())
	if err == nil {
		sort.Slice(secrets, func(i, j int) bool { return secrets[i].Name < secrets[j].Name })
		for _, s := range secrets {
			c.reconcile(types.NamespacedName{Namespace: s.Namespace, Name: s.Name})
		}
	}
	c.mu.Lock()
	c.initialDone = true
	c.mu.Unlock()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for c.processNext() {
		}
	}()
	go func() {
		defer wg.Done()
		c.watchExpiry(ctx)
	}()
	<-ctx.Done()
}

// HasSynced reports whether the Secrets present at start were listed and processed.
func (c *Controller) HasSynced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.initialDone
}

// Status returns the state of every data key of every remote Secret, sorted by
// Secret and key.
//
// A key whose cluster was handed to the registry carries its credential's expiry
// and state, judged now.
func (c *Controller) Status() []KeyStatus {
	c.mu.Lock()
	out := append([]KeyStatus(nil), c.status...)
	c.mu.Unlock()
	now := c.opts.Clock.Now()
	for i := range out {
		if out[i].CredentialSource != "" || out[i].CredentialState != "" {
			out[i].CredentialState = credentialState(out[i].CredentialExpiry, now, c.opts.ExpiryWarning)
		}
	}
	return out
}

func (c *Controller) processNext() bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	c.reconcile(key)
	c.queue.Forget(key)
	return true
}

// reconcile brings the handler's clusters in line with one Secret. Every outcome is
// terminal for the current contents of the Secret (a kubeconfig does not fix itself),
// so nothing is retried until the Secret changes.
func (c *Controller) reconcile(name types.NamespacedName) {
	defer c.publishStatus()
	secret, err := c.lister.Secrets(name.Namespace).Get(name.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		c.log.Error("read remote secret from cache", "secret", name.String(), "error", err)
		return
	}
	var data map[string][]byte
	if err == nil {
		data = secret.Data
	}
	if n := len(data); n > c.opts.MaxKeysPerSecret {
		// Refused before any kubeconfig is parsed or any cluster started: the number of
		// clusters one Secret can create is bounded.
		msg := fmt.Sprintf("secret %s has %d keys, more than the limit of %d (--remote-max-keys-per-secret); its changes are not applied", name, n, c.opts.MaxKeysPerSecret)
		if prev, already := c.tooMany[name]; !already || prev.Error != msg {
			if !already {
				c.countEvent(string(KeyTooMany))
			}
			c.log.Error("remote secret refused: too many keys", "secret", name.String(), "keys", n, "max", c.opts.MaxKeysPerSecret)
			c.tooMany[name] = KeyStatus{Secret: name.String(), State: KeyTooMany, Error: msg, Updated: time.Now()}
		}
		return
	}
	prevRefusal, refused := c.tooMany[name]
	delete(c.tooMany, name)
	// The Secret's own discovery selectors, when it has them, apply to its clusters.
	var sel *network.DiscoverySelectors
	var override bool
	var value string
	if secret != nil {
		value, override = secret.Annotations[network.AnnotationDiscoverySelectors]
	}
	if override {
		parsed, err := network.ParseDiscoverySelectors(value)
		if err != nil {
			msg := fmt.Sprintf("secret %s: %v; its changes are not applied", name, err)
			if !refused || prevRefusal.Error != msg {
				c.countEvent(string(KeyInvalidSelectors))
				c.log.Error("remote secret refused: invalid discovery selectors", "secret", name.String(), "error", err)
			}
			c.tooMany[name] = KeyStatus{Secret: name.String(), State: KeyInvalidSelectors, Error: msg, Updated: time.Now()}
			return
		}
		sel = parsed
	}
	records := c.keys[name]
	if records == nil {
		records = map[string]*keyRecord{}
		c.keys[name] = records
	}
	released := false
	// Keys that disappeared (or the whole Secret).
	for key, rec := range records {
		if _, ok := data[key]; ok {
			continue
		}
		c.countEvent("removed")
		if rec.active {
			c.opts.Handler.RemoveCluster(rec.status.Cluster)
			c.log.Info("remote cluster removed", "secret", name.String(), "key", key, "cluster", rec.status.Cluster)
		}
		if c.owners[rec.status.Cluster] == name {
			delete(c.owners, rec.status.Cluster)
			released = true
		}
		delete(records, key)
	}
	if len(records) == 0 && data == nil {
		delete(c.keys, name)
	}
	var waiting []string // keys newly refused for the cluster cap
	for _, key := range sortedKeys(data) {
		if c.reconcileKey(name, key, data[key], records, sel, override) {
			waiting = append(waiting, key)
		}
	}
	if len(waiting) > 0 {
		// One line per Secret change, however many of its keys wait.
		c.log.Warn("remote clusters refused: too many clusters; waiting for room", "secret", name.String(),
			"keys", len(waiting), "firstKey", waiting[0], "max", c.opts.MaxClusters)
	}
	if released {
		// A cluster ID and a place under the cluster cap became free: keys refused as
		// duplicates or for the cap may take them now.
		c.requeueWaiting(name)
	}
}

// reconcileKey brings one data key in line. It reports whether the key was newly
// refused for the cluster cap, which the caller logs once for the whole Secret.
func (c *Controller) reconcileKey(name types.NamespacedName, key string, kubeconfig []byte, records map[string]*keyRecord,
	sel *network.DiscoverySelectors, override bool) (newlyWaiting bool) {
	id := network.ClusterID(key)
	rec := records[key]
	if rec == nil {
		rec = &keyRecord{status: KeyStatus{Secret: name.String(), Key: key, Cluster: id}}
		records[key] = rec
	}
	set := func(state KeyState, msg string) {
		if rec.status.State != state || rec.status.Error != msg {
			rec.status.Updated = time.Now()
			c.countEvent(string(state))
		}
		rec.status.State, rec.status.Error = state, msg
	}
	log := c.log.With("secret", name.String(), "key", key, "cluster", id)

	if id == c.opts.ClusterID {
		if rec.status.State != KeyIgnored {
			log.Warn("remote secret key names the config cluster itself; ignored")
		}
		set(KeyIgnored, fmt.Sprintf("cluster ID %q is the config cluster's own ID", id))
		return false
	}
	if owner, ok := c.owners[id]; ok && owner != name {
		if rec.status.State != KeyDuplicate {
			log.Warn("cluster ID already claimed by another remote secret; refused", "claimedBy", owner.String())
		}
		set(KeyDuplicate, fmt.Sprintf("cluster ID %q is already claimed by secret %s", id, owner))
		return false
	}
	sum := sha256.Sum256(kubeconfig)
	if rec.active && sum == rec.hash {
		c.setSelectors(id, sel, override)
		set(KeyAccepted, "")
		return false // unchanged kubeconfig: nothing to do
	}
	if rec.status.State == KeyRejected && sum == rec.rejected {
		return false // the same bad kubeconfig again
	}
	cfg, err := LoadKubeconfig(kubeconfig, c.opts.Load)
	if err != nil {
		rec.rejected = sum
		msg := fmt.Sprintf("secret %s key %q: %v", name, key, err)
		if rec.active {
			msg += "; the cluster keeps its previous credentials"
		}
		kind := RefusalKindOf(err)
		log.Error("remote kubeconfig rejected", "error", err, "refused", string(kind), "keepsPrevious", rec.active)
		c.countRefusal(kind)
		set(KeyRejected, msg)
		return false
	}
	// Owners are exactly the clusters handed to the handler: the cap counts them.
	if !rec.active && len(c.owners) >= c.opts.MaxClusters {
		was := rec.status.State
		set(KeyTooManyClusters, fmt.Sprintf("secret %s key %q: %d remote clusters exist, the limit (--remote-max-clusters); waiting until one is removed",
			name, key, c.opts.MaxClusters))
		return was != KeyTooManyClusters
	}
	c.owners[id] = name
	c.setSelectors(id, sel, override)
	c.opts.Handler.SetCluster(id, fmt.Sprintf("%s[%s]", name, key), cfg)
	if rec.active {
		c.countEvent("updated")
		log.Info("remote cluster credentials changed", "server", network.RedactServer(cfg.Host))
	} else {
		log.Info("remote cluster added", "server", network.RedactServer(cfg.Host))
	}
	rec.active, rec.hash = true, sum
	rec.status.CredentialExpiry, rec.status.CredentialSource = credentialExpiry(cfg)
	// Marks the key as holding a credential, whose state Status judges.
	rec.status.CredentialState = CredentialUnknown
	set(KeyAccepted, "")
	return false
}

// setSelectors tells the handler, if it scopes its watches, cluster id's selectors.
func (c *Controller) setSelectors(id network.ClusterID, sel *network.DiscoverySelectors, override bool) {
	if h, ok := c.opts.Handler.(SelectorHandler); ok {
		h.SetClusterDiscoverySelectors(id, sel, override)
	}
}

func (c *Controller) countEvent(outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.events == nil {
		c.events = map[string]uint64{}
	}
	c.events[outcome]++
}

func (c *Controller) countRefusal(kind RefusalKind) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refusals == nil {
		c.refusals = map[RefusalKind]uint64{}
	}
	c.refusals[kind]++
}

// Refusals counts the kubeconfigs refused since start by what made them unusable:
// each refused kubeconfig once, however often its Secret is seen again unchanged.
// Every RefusalKind is present.
func (c *Controller) Refusals() map[RefusalKind]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[RefusalKind]uint64, len(RefusalKinds))
	for _, k := range RefusalKinds {
		out[k] = c.refusals[k]
	}
	return out
}

// Events counts what happened to remote Secret keys since start, by outcome:
// accepted, rejected, duplicate, ignored, too-many-clusters (a key reaching that
// state), updated (credentials rotated), removed, and too-many-keys (a Secret refused
// for holding more keys than allowed).
func (c *Controller) Events() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.events)
}

// requeueWaiting enqueues every Secret holding a key refused as a duplicate or for the
// cluster cap, in name order, so that of several Secrets waiting for one cluster ID or
// for room the first by name takes it, as at start.
func (c *Controller) requeueWaiting(except types.NamespacedName) {
	var waiting []types.NamespacedName
	for name, records := range c.keys {
		if name == except {
			continue
		}
		for _, rec := range records {
			if rec.status.State == KeyDuplicate || rec.status.State == KeyTooManyClusters {
				waiting = append(waiting, name)
				break
			}
		}
	}
	sort.Slice(waiting, func(i, j int) bool { return waiting[i].String() < waiting[j].String() })
	for _, name := range waiting {
		c.queue.Add(name)
	}
}

func (c *Controller) publishStatus() {
	var out []KeyStatus
	for _, st := range c.tooMany {
		out = append(out, st)
	}
	for _, records := range c.keys {
		for _, rec := range records {
			out = append(out, rec.status)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Secret != out[j].Secret {
			return out[i].Secret < out[j].Secret
		}
		return out[i].Key < out[j].Key
	})
	c.mu.Lock()
	c.status = out
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// watchExpiry logs, once per credential, when a remote credential comes within the
// warning window of its expiry and when it expires. It checks after every change of
// statuses and every expiryCheckInterval, until ctx is done.
func (c *Controller) watchExpiry(ctx context.Context) {
	tick := c.opts.Clock.NewTicker(expiryCheckInterval)
	defer tick.Stop()
	// Secret/key → the credential (by expiry) and the state last logged for it.
	type seen struct {
		expiry time.Time
		state  CredentialState
	}
	logged := map[string]seen{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		case <-c.kick:
		}
		now := c.opts.Clock.Now()
		current := map[string]bool{}
		for _, st := range c.Status() {
			if st.CredentialExpiry.IsZero() {
				continue
			}
			k := st.Secret + "[" + st.Key + "]"
			current[k] = true
			state := st.CredentialState
			prev, ok := logged[k]
			if ok && prev.expiry.Equal(st.CredentialExpiry) && prev.state == state {
				continue
			}
			logged[k] = seen{st.CredentialExpiry, state}
			attrs := []any{"secret", st.Secret, "key", st.Key, "cluster", st.Cluster, "credential", st.CredentialSource,
				"expiry", st.CredentialExpiry.Format(time.RFC3339), "left", st.CredentialExpiry.Sub(now).Round(time.Second).String()}
			switch state {
			case CredentialExpiring:
				c.log.Warn("remote credential expires soon; rotate it with create-remote-secret", attrs...)
			case CredentialExpired:
				c.log.Error("remote credential expired; the remote cluster will refuse it", attrs...)
			}
		}
		for k := range logged {
			if !current[k] {
				delete(logged, k)
			}
		}
	}
}
