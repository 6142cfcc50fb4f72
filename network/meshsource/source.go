package meshsource

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"github.com/horizon-mesh/horizon/network"
)

// The ConfigMap and key that hold meshNetworks, as in Istio.
const (
	ConfigMapName = "istio"
	ConfigMapKey  = "meshNetworks"
)

// Options configures a Source.
type Options struct {
	// File is the --mesh-networks path. When set, the file is the source.
	File string
	// Client reaches the config cluster. When File is empty, the source is the
	// meshNetworks key of ConfigMap istio in Namespace.
	Client kubernetes.Interface
	// Namespace is the system namespace holding the istio ConfigMap.
	Namespace string
	// Logger receives the source's log lines; slog.Default() when nil.
	Logger *slog.Logger
	// OnChange is called with each new valid configuration, the first one included.
	// Optional.
	OnChange func(*network.Networks)

	// Debounce is how long the file source waits for its directory to be quiet
	// before reading the file again, so that a half-written file is not read.
	// Default 100ms.
	Debounce time.Duration
	// Resync is how often the file source reads the file even without a change
	// event, and retries watching a directory that did not exist. Default 30s.
	Resync time.Duration
}

// AddFlags binds the options that come from the command line. Namespace is shared with
// the remote-secret controller and bound there.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.File, "mesh-networks", "", "meshNetworks file (Istio's format); when empty, the "+ConfigMapKey+" key of ConfigMap "+ConfigMapName+" in the system namespace is watched")
}

// Validate checks the options once, before New.
func (o *Options) Validate() error {
	return validateSource("--mesh-networks", o.File, o.Client, o.Namespace, o.Debounce, o.Resync)
}

// validateSource checks what every source of this package takes: a file (fileFlag)
// or a client and namespace, and non-negative debounce and resync.
func validateSource(fileFlag, file string, client kubernetes.Interface, namespace string, debounce, resync time.Duration) error {
	var errs []error
	if file == "" {
		if client == nil {
			errs = append(errs, fmt.Errorf("meshsource: a file (%s) or a config-cluster client is required", fileFlag))
		}
		if namespace == "" {
			errs = append(errs, errors.New("--namespace: must not be empty"))
		}
	}
	if debounce < 0 {
		errs = append(errs, fmt.Errorf("meshsource: debounce must not be negative, got %s", debounce))
	}
	if resync < 0 {
		errs = append(errs, fmt.Errorf("meshsource: resync must not be negative, got %s", resync))
	}
	return errors.Join(errs...)
}

// Status describes the source and the configuration in force.
type Status struct {
	// Source names where the configuration comes from.
	Source string `json:"source"`
	// Generation counts the configurations applied; 0 before the first.
	Generation int `json:"generation"`
	// LastApplied is when the configuration in force was applied.
	LastApplied time.Time `json:"lastApplied,omitzero"`
	// Rejected is the error of the last rejected edit; "" once a later edit is
	// accepted.
	Rejected string `json:"rejected,omitempty"`
	// RejectedAt is when that edit was rejected.
	RejectedAt time.Time `json:"rejectedAt,omitzero"`
	// Rejections counts the edits (and failed reads) rejected since start.
	Rejections int `json:"rejections"`
}

// Source watches meshNetworks and keeps the last good configuration.
type Source struct {
	opts   Options
	log    *slog.Logger
	synced atomic.Bool

	// Owned by the Run goroutine.
	lastHash [sha256.Size]byte // of the content last read, accepted or not
	seen     bool              // lastHash is set

	mu      sync.Mutex
	current *network.Networks // guarded by mu
	status  Status            // guarded by mu
}

// New returns a Source; Run starts it.
func New(opts Options) (*Source, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.OnChange == nil {
		opts.OnChange = func(*network.Networks) {}
	}
	if opts.Debounce == 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.Resync == 0 {
		opts.Resync = 30 * time.Second
	}
	empty, err := network.Compile(nil)
	if err != nil {
		return nil, fmt.Errorf("compile empty meshNetworks: %w", err)
	}
	s := &Source{opts: opts, current: empty}
	if opts.File != "" {
		s.status.Source = "file " + opts.File
	} else {
		s.status.Source = fmt.Sprintf("configmap %s/%s key %s", opts.Namespace, ConfigMapName, ConfigMapKey)
	}
	s.log = opts.Logger.With("component", "meshsource", "source", s.status.Source)
	return s, nil
}

// Run watches the source until ctx is done, then returns after every goroutine it
// started has ended. Call it once.
func (s *Source) Run(ctx context.Context) {
	w := &watcher{
		what: "meshNetworks", key: ConfigMapKey, file: s.opts.File,
		client: s.opts.Client, namespace: s.opts.Namespace,
		debounce: s.opts.Debounce, resync: s.opts.Resync, log: s.log,
		synced: &s.synced, apply: s.apply, readFailed: s.readFailed,
	}
	w.run(ctx)
}

// watcher watches one configuration, in a file or a key of the istio ConfigMap, and
// hands what it reads to apply (or a read error to readFailed), from its Run
// goroutine.
type watcher struct {
	what       string // names the configuration in logs and errors
	key        string // of the ConfigMap
	file       string // when set, the file is the source
	client     kubernetes.Interface
	namespace  string
	debounce   time.Duration
	resync     time.Duration
	log        *slog.Logger
	synced     *atomic.Bool // set once the source has been read once
	apply      func([]byte)
	readFailed func(error)
}

func (s *watcher) run(ctx context.Context) {
	if s.file != "" {
		s.runFile(ctx)
		return
	}
	s.runConfigMap(ctx)
}

// Current returns the configuration in force: the last good one, or an empty one
// before any.
func (s *Source) Current() *network.Networks {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// HasSynced reports whether the source has been read once (and, for the ConfigMap,
// the watch has synced). A first configuration that was rejected counts: the empty
// configuration is then in force and Status says why.
func (s *Source) HasSynced() bool { return s.synced.Load() }

// Status returns the source's status.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// apply parses, validates and compiles data and, when valid and different from the
// configuration in force, puts it in force and calls OnChange. Content identical to
// the last read is ignored. Run goroutine only.
func (s *Source) apply(data []byte) {
	h := sha256.Sum256(data)
	if s.seen && h == s.lastHash {
		return
	}
	s.lastHash, s.seen = h, true

	mn, err := network.ParseMeshNetworks(data)
	var nets *network.Networks
	if err == nil {
		nets, err = network.Compile(mn)
	}
	if err != nil {
		s.reject(err)
		return
	}
	now := time.Now()
	s.mu.Lock()
	s.status.Rejected, s.status.RejectedAt = "", time.Time{}
	if s.status.Generation > 0 && nets.Equal(s.current) {
		s.mu.Unlock()
		s.log.Debug("meshNetworks unchanged")
		return
	}
	s.current = nets
	s.status.Generation++
	s.status.LastApplied = now
	gen := s.status.Generation
	s.mu.Unlock()
	s.log.Info("meshNetworks applied", "generation", gen, "networks", nets.Names())
	for _, id := range nets.Names() {
		if nets.AwaitingGateway(id) {
			s.log.Warn("gateway address not set yet (0.0.0.0); the network's endpoints are unreachable from other networks", "network", id, "generation", gen)
		}
	}
	s.opts.OnChange(nets)
}

// reject records err as the reason the latest content is not in force. Run goroutine
// only.
func (s *Source) reject(err error) {
	s.mu.Lock()
	s.status.Rejected, s.status.RejectedAt = err.Error(), time.Now()
	s.status.Rejections++
	gen := s.status.Generation
	s.mu.Unlock()
	s.log.Error("meshNetworks rejected", "error", err, "generation", gen)
}

// readFailed records that the source could not be read; the content is unknown, so
// the next successful read is applied even if it matches the last one.
func (s *Source) readFailed(err error) {
	s.seen = false
	s.mu.Lock()
	repeated := s.status.Rejected == err.Error()
	s.mu.Unlock()
	if !repeated {
		s.reject(err)
	}
}
