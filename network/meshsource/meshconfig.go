package meshsource

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"github.com/horizon-mesh/horizon/network"
)

// MeshConfigKey is the key of the istio ConfigMap that holds Istio's MeshConfig.
const MeshConfigKey = "mesh"

// MeshConfigOptions configures a MeshConfigSource.
type MeshConfigOptions struct {
	// File is the --mesh-config path. When set, the file is the source.
	File string
	// Client reaches the config cluster. When File is empty, the source is the mesh key
	// of ConfigMap istio in Namespace.
	Client kubernetes.Interface
	// Namespace is the system namespace holding the istio ConfigMap.
	Namespace string
	// Logger receives the source's log lines; slog.Default() when nil.
	Logger *slog.Logger
	// OnChange is called with each new valid configuration, the first one included.
	// Optional.
	OnChange func(*network.MeshConfig)
	// Debounce and Resync are as in Options. Defaults 100ms and 30s.
	Debounce time.Duration
	Resync   time.Duration
}

// AddFlags binds the options that come from the command line.
func (o *MeshConfigOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.File, "mesh-config", "", "mesh config file (Istio's MeshConfig; Horizon reads discoverySelectors); when empty, the "+MeshConfigKey+" key of ConfigMap "+ConfigMapName+" in the system namespace is watched")
}

// Validate checks the options once, before NewMeshConfig.
func (o *MeshConfigOptions) Validate() error {
	return validateSource("--mesh-config", o.File, o.Client, o.Namespace, o.Debounce, o.Resync)
}

// MeshConfigSource watches Istio's MeshConfig and keeps the last good one. Like Source,
// it is safe for concurrent use; OnChange is called from Run, one call at a time.
type MeshConfigSource struct {
	opts   MeshConfigOptions
	log    *slog.Logger
	synced atomic.Bool

	// Owned by the Run goroutine.
	lastHash [sha256.Size]byte
	seen     bool

	mu      sync.Mutex
	current *network.MeshConfig // guarded by mu
	status  Status              // guarded by mu
}

// NewMeshConfig returns a MeshConfigSource; Run starts it.
func NewMeshConfig(opts MeshConfigOptions) (*MeshConfigSource, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.OnChange == nil {
		opts.OnChange = func(*network.MeshConfig) {}
	}
	if opts.Debounce == 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.Resync == 0 {
		opts.Resync = 30 * time.Second
	}
	s := &MeshConfigSource{opts: opts, current: &network.MeshConfig{}}
	if opts.File != "" {
		s.status.Source = "file " + opts.File
	} else {
		s.status.Source = fmt.Sprintf("configmap %s/%s key %s", opts.Namespace, ConfigMapName, MeshConfigKey)
	}
	s.log = opts.Logger.With("component", "meshconfig", "source", s.status.Source)
	return s, nil
}

// Run watches the source until ctx is done, then returns after every goroutine it
// started has ended. Call it once.
func (s *MeshConfigSource) Run(ctx context.Context) {
	w := &watcher{
		what: "mesh config", key: MeshConfigKey, file: s.opts.File,
		client: s.opts.Client, namespace: s.opts.Namespace,
		debounce: s.opts.Debounce, resync: s.opts.Resync, log: s.log,
		synced: &s.synced, apply: s.apply, readFailed: s.readFailed,
	}
	w.run(ctx)
}

// Current returns the configuration in force: the last good one, or an empty one
// (every namespace selected) before any.
func (s *MeshConfigSource) Current() *network.MeshConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// HasSynced reports whether the source has been read once.
func (s *MeshConfigSource) HasSynced() bool { return s.synced.Load() }

// Status returns the source's status.
func (s *MeshConfigSource) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// apply parses and validates data and, when valid and different from the
// configuration in force, puts it in force and calls OnChange. Run goroutine only.
func (s *MeshConfigSource) apply(data []byte) {
	h := sha256.Sum256(data)
	if s.seen && h == s.lastHash {
		return
	}
	s.lastHash, s.seen = h, true
	mc, err := network.ParseMeshConfig(data)
	if err != nil {
		s.reject(err)
		return
	}
	s.mu.Lock()
	s.status.Rejected, s.status.RejectedAt = "", time.Time{}
	if s.status.Generation > 0 && mc.DiscoverySelectors.Equal(s.current.DiscoverySelectors) &&
		mc.ClusterLocal.Equal(s.current.ClusterLocal) {
		s.mu.Unlock()
		s.log.Debug("mesh config unchanged")
		return
	}
	s.current = mc
	s.status.Generation++
	s.status.LastApplied = time.Now()
	gen := s.status.Generation
	s.mu.Unlock()
	s.log.Info("mesh config applied", "generation", gen, "discoverySelectors", mc.DiscoverySelectors.String(),
		"clusterLocal", mc.ClusterLocal.String())
	s.opts.OnChange(mc)
}

func (s *MeshConfigSource) reject(err error) {
	s.mu.Lock()
	s.status.Rejected, s.status.RejectedAt = err.Error(), time.Now()
	s.status.Rejections++
	gen := s.status.Generation
	s.mu.Unlock()
	s.log.Error("mesh config rejected; the last good one stays in force", "error", err, "generation", gen)
}

func (s *MeshConfigSource) readFailed(err error) {
	s.seen = false
	s.mu.Lock()
	repeated := s.status.Rejected == err.Error()
	s.mu.Unlock()
	if !repeated {
		s.reject(err)
	}
}
