package gatewaysource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// Group is the API group of Istio's Gateway resource.
const Group = "networking.istio.io"

// versions are tried in this order; the first one served is watched.
var versions = []string{"v1", "v1beta1", "v1alpha3"}

// Server is one AUTO_PASSTHROUGH server of a Gateway resource.
type Server struct {
	// Gateway is the resource's namespace/name.
	Gateway  string            `json:"gateway"`
	Selector map[string]string `json:"selector,omitempty"`
	Port     uint32            `json:"port"`
	Hosts    []string          `json:"hosts"`
}

// Options configures a Source.
type Options struct {
	Dynamic   dynamic.Interface
	Discovery discovery.DiscoveryInterface
	// Retry is how often to look for the Gateway resource again while it is not
	// installed (default 30s).
	Retry time.Duration
	// SyncTimeout bounds how long HasSynced waits for the first list of Gateways
	// (default 10s): a resource that discovery shows but the server cannot list (a
	// CRD being removed) must not hold readiness forever.
	SyncTimeout time.Duration
	Logger      *slog.Logger
	OnChange    func()
}

// Source keeps the AUTO_PASSTHROUGH servers of every Gateway resource.
type Source struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	servers  []Server // guarded by mu
	synced   bool     // guarded by mu
	version  string   // guarded by mu; the API version watched, "" before
	problems []string // guarded by mu; Gateways that could not be read
}

// New returns a Source; Run starts it.
func New(opts Options) (*Source, error) {
	if opts.Dynamic == nil || opts.Discovery == nil {
		return nil, errors.New("gatewaysource: dynamic and discovery clients are required")
	}
	if opts.Retry <= 0 {
		opts.Retry = 30 * time.Second
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Source{opts: opts, log: opts.Logger.With("component", "gatewaysource")}, nil
}

// Servers returns the AUTO_PASSTHROUGH servers in force, sorted by Gateway and port.
func (s *Source) Servers() []Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.servers
}

// HasSynced reports whether the Gateways present at start were read, or the
// resource is not installed.
func (s *Source) HasSynced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// Problems lists Gateway resources that could not be read, with the reason.
func (s *Source) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.problems)
}

// Run watches Gateways until ctx is done. While the resource is not installed it
// looks for it again every Retry.
func (s *Source) Run(ctx context.Context) {
	var gvr schema.GroupVersionResource
	for {
		v, err := s.servedVersion()
		if err == nil && v != "" {
			gvr = schema.GroupVersionResource{Group: Group, Version: v, Resource: "gateways"}
			break
		}
		s.mu.Lock()
		first := !s.synced
		s.synced = true
		s.mu.Unlock()
		if first {
			s.log.Info("Gateway resource not installed; gateways get the default passthrough listener", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.opts.Retry):
		}
	}
	s.log.Info("watching Gateway resources", "version", gvr.Version)
	s.mu.Lock()
	s.version = gvr.Version
	s.mu.Unlock()

	factory := dynamicinformer.NewDynamicSharedInformerFactory(s.opts.Dynamic, 0)
	inf := factory.ForResource(gvr).Informer()
	update := func(any) { s.recompute(inf.GetStore()) }
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, cur any) { update(cur) },
		DeleteFunc: update,
	})
	if err != nil {
		s.log.Error("watch Gateway resources", "error", err)
		return
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	syncCtx, cancel := context.WithTimeout(ctx, s.opts.SyncTimeout)
	defer cancel()
	if cache.WaitForCacheSync(syncCtx.Done(), reg.HasSynced) {
		s.recompute(inf.GetStore())
	} else if ctx.Err() == nil {
		s.log.Warn("Gateway resources not listed in time; gateways get the default passthrough listener until they are",
			"version", gvr.Version, "timeout", s.opts.SyncTimeout)
	}
	s.mu.Lock()
	s.synced = true
	s.mu.Unlock()
	<-ctx.Done()
}

// servedVersion returns the first served version of the Gateway resource, or "".
func (s *Source) servedVersion() (string, error) {
	var errs []error
	for _, v := range versions {
		list, err := s.opts.Discovery.ServerResourcesForGroupVersion(Group + "/" + v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range list.APIResources {
			if r.Name == "gateways" {
				return v, nil
			}
		}
	}
	return "", errors.Join(errs...)
}

func (s *Source) recompute(store cache.Store) {
	var servers []Server
	var problems []string
	for _, obj := range store.List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		got, err := passthroughServers(u)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		servers = append(servers, got...)
	}
	sort.Slice(servers, func(i, j int) bool {
		if servers[i].Gateway != servers[j].Gateway {
			return servers[i].Gateway < servers[j].Gateway
		}
		return servers[i].Port < servers[j].Port
	})
	sort.Strings(problems)
	s.mu.Lock()
	changed := !reflect.DeepEqual(servers, s.servers)
	newProblems := !slices.Equal(problems, s.problems)
	s.servers, s.problems = servers, problems
	s.mu.Unlock()
	if newProblems {
		for _, p := range problems {
			s.log.Warn("Gateway resource ignored", "error", p)
		}
	}
	if changed {
		s.log.Info("passthrough gateway servers changed", "servers", len(servers))
		if s.opts.OnChange != nil {
			s.opts.OnChange()
		}
	}
}

// passthroughServers reads a Gateway's spec with Istio's own types and returns its
// AUTO_PASSTHROUGH servers.
func passthroughServers(u *unstructured.Unstructured) ([]Server, error) {
	name := u.GetNamespace() + "/" + u.GetName()
	spec, ok := u.Object["spec"]
	if !ok {
		return nil, nil
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", name, err)
	}
	var gw networkingv1alpha3.Gateway
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &gw); err != nil {
		return nil, fmt.Errorf("gateway %s: spec: %w", name, err)
	}
	var out []Server
	for i, srv := range gw.GetServers() {
		if srv.GetTls().GetMode() != networkingv1alpha3.ServerTLSSettings_AUTO_PASSTHROUGH {
			continue
		}
		port := srv.GetPort().GetNumber()
		if port == 0 || port > 65535 {
			return nil, fmt.Errorf("gateway %s: servers[%d].port.number: must be 1-65535, got %d", name, i, port)
		}
		if len(srv.GetHosts()) == 0 {
			return nil, fmt.Errorf("gateway %s: servers[%d].hosts: must not be empty", name, i)
		}
		out = append(out, Server{Gateway: name, Selector: gw.GetSelector(), Port: port, Hosts: srv.GetHosts()})
	}
	return out, nil
}
