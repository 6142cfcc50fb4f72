package exportstatus

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"

	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/mcs"
)

// APIVersion is the ServiceExport version the conditions are written in; every
// release of the mcs-api CRDs serves it.
const APIVersion = "multicluster.x-k8s.io/v1alpha1"

// ConditionType is the type of the condition Horizon writes.
const ConditionType = "Conflict"

// FieldManager owns the condition in the ServiceExport's managed fields.
const FieldManager = "horizon"

// Source is what the controller reads: the exports of every exported service.
type Source interface {
	// ServiceExports returns every cluster's export of svc; none when no cluster
	// exports it.
	ServiceExports(svc types.NamespacedName) []mcs.Export
	// ExportedServices lists the services some cluster exports.
	ExportedServices() []types.NamespacedName
}

// Patcher applies body, a server-side apply patch, to the status subresource of the
// ServiceExport svc in cluster. Its errors keep the API server's status code (for
// apierrors.IsNotFound and the like) and must not quote the server's response body.
type Patcher func(ctx context.Context, cluster network.ClusterID, svc types.NamespacedName, body []byte) error

// Options configures a Controller.
type Options struct {
	// Write makes the controller write the Conflict conditions; without it, it only
	// resolves and reports.
	Write bool
	// QPS and Burst bound the condition writes over all clusters (a token bucket).
	QPS   float64
	Burst int
	// MaxListed bounds the services Status lists. Default 100.
	MaxListed int
	// Source and Patch are required (Patch only with Write).
	Source Source
	Patch  Patcher
	// Now stamps a condition's lastTransitionTime; time.Now when nil.
	Now    func() time.Time
	Logger *slog.Logger
}

// Defaults of the flags.
const (
	defaultQPS       = 5
	defaultBurst     = 10
	defaultMaxListed = 100
)

// AddFlags binds the options that come from the command line.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.Write, "mcs-export-status", false, "with --mcs, write a Conflict condition (True with the conflicting property and the winning cluster, or False) on every ServiceExport "+
		"in every cluster; needs patch on serviceexports/status in each cluster (an opt-in RBAC rule)")
	fs.Float64Var(&o.QPS, "mcs-export-status-qps", defaultQPS, "ServiceExport status writes per second over all clusters, with --mcs-export-status")
	fs.IntVar(&o.Burst, "mcs-export-status-burst", defaultBurst, "ServiceExport status writes at once above --mcs-export-status-qps")
}

// Validate checks the options that come from flags.
func (o *Options) Validate() error {
	var errs []error
	if o.QPS <= 0 || o.QPS > 1000 {
		errs = append(errs, fmt.Errorf("--mcs-export-status-qps: must be more than 0 and at most 1000, got %g", o.QPS))
	}
	if o.Burst < 1 || o.Burst > 10000 {
		errs = append(errs, fmt.Errorf("--mcs-export-status-burst: must be 1-10000, got %d", o.Burst))
	}
	if o.MaxListed < 0 || o.MaxListed > 10000 {
		errs = append(errs, fmt.Errorf("MaxListed: must be 0-10000, got %d", o.MaxListed))
	}
	return errors.Join(errs...)
}

// exportKey names one cluster's ServiceExport.
type exportKey struct {
	Cluster network.ClusterID
	types.NamespacedName
}

// desired is the condition an export should have; created tells a recreated export
// from the one written before.
type desired struct {
	cond    mcs.Condition
	created time.Time
}

func (d desired) same(o desired) bool { return d.cond == o.cond && d.created.Equal(o.created) }

// written is the condition last written to an export (of that creation time), and
// when its status last changed.
type written struct {
	desired
	transition time.Time
}

// Controller resolves every exported service's exports and writes their conditions.
type Controller struct {
	opts    Options
	log     *slog.Logger
	limiter *rate.Limiter

	resolveQ workqueue.TypedRateLimitingInterface[types.NamespacedName]
	writeQ   workqueue.TypedRateLimitingInterface[exportKey]

	mu                     sync.Mutex
	services               map[types.NamespacedName]mcs.Resolution // guarded by mu; with conflicts or not
	desired                map[exportKey]desired                   // guarded by mu
	written                map[exportKey]written                   // guarded by mu
	writesOK, writesFailed uint64                                  // guarded by mu
	lastErr                string                                  // guarded by mu
	lastErrAt              time.Time                               // guarded by mu
}

// New returns a Controller; Run starts it.
func New(opts Options) (*Controller, error) {
	if opts.QPS == 0 {
		opts.QPS = defaultQPS
	}
	if opts.Burst == 0 {
		opts.Burst = defaultBurst
	}
	if opts.MaxListed == 0 {
		opts.MaxListed = defaultMaxListed
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Source == nil {
		return nil, errors.New("exportstatus: Source is required")
	}
	if opts.Write && opts.Patch == nil {
		return nil, errors.New("exportstatus: Patch is required to write conditions")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Controller{
		opts:    opts,
		log:     opts.Logger.With("component", "mcs-export-status"),
		limiter: rate.NewLimiter(rate.Limit(opts.QPS), opts.Burst),
		resolveQ: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "mcs-export-resolve"}),
		writeQ: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[exportKey](time.Second, 5*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[exportKey]{Name: "mcs-export-status"}),
		services: map[types.NamespacedName]mcs.Resolution{},
		desired:  map[exportKey]desired{},
		written:  map[exportKey]written{},
	}, nil
}

// Changed says that the exports of svc, or the Services behind them, may have
// changed. It does not block.
func (c *Controller) Changed(svc types.NamespacedName) { c.resolveQ.Add(svc) }

// ResyncAll queues every exported service, and every service resolved before (whose
// exports may all be gone).
func (c *Controller) ResyncAll() {
	for _, svc := range c.opts.Source.ExportedServices() {
		c.resolveQ.Add(svc)
	}
	c.mu.Lock()
	known := make([]types.NamespacedName, 0, len(c.services))
	for svc := range c.services {
		known = append(known, svc)
	}
	c.mu.Unlock()
	for _, svc := range known {
		c.resolveQ.Add(svc)
	}
}

// Run resolves every exported service, then each one Changed names, and writes
// conditions, until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.writeQ.ShutDown()
	defer c.resolveQ.ShutDown()
	c.ResyncAll()
	wg.Go(func() {
		for c.resolveNext() {
		}
	})
	if c.opts.Write {
		wg.Go(func() {
			for c.writeNext(ctx) {
			}
		})
	}
	<-ctx.Done()
}

func (c *Controller) resolveNext() bool {
	svc, shut := c.resolveQ.Get()
	if shut {
		return false
	}
	defer c.resolveQ.Done(svc)
	c.resolve(svc)
	return true
}

// resolve merges svc's exports and queues a write for each export whose condition
// is not the one last written.
func (c *Controller) resolve(svc types.NamespacedName) {
	exports := c.opts.Source.ServiceExports(svc)
	res := mcs.Resolve(exports)
	var writes []exportKey
	c.mu.Lock()
	prev, had := c.services[svc]
	if len(exports) == 0 {
		delete(c.services, svc)
	} else {
		c.services[svc] = res
	}
	// An export that is gone needs no condition; forget what was written to it.
	if had {
		for _, cl := range prev.Order {
			if !slices.Contains(res.Order, cl) {
				k := exportKey{cl, svc}
				delete(c.desired, k)
				delete(c.written, k)
			}
		}
	}
	for _, e := range exports {
		k := exportKey{e.Cluster, svc}
		d := desired{cond: res.ConditionFor(e.Cluster), created: e.Created}
		c.desired[k] = d
		if w, ok := c.written[k]; !ok || !w.same(d) {
			writes = append(writes, k)
		}
	}
	c.mu.Unlock()
	if had && len(prev.Conflicts) != len(res.Conflicts) {
		c.log.Info("ServiceExport conflicts changed", "namespace", svc.Namespace, "service", svc.Name,
			"conflicts", len(res.Conflicts), "oldest", res.Oldest)
	} else if !had && len(res.Conflicts) > 0 {
		c.log.Info("ServiceExport conflicts found", "namespace", svc.Namespace, "service", svc.Name,
			"conflicts", len(res.Conflicts), "oldest", res.Oldest)
	}
	if c.opts.Write {
		for _, k := range writes {
			c.writeQ.Add(k)
		}
	}
}

func (c *Controller) writeNext(ctx context.Context) bool {
	k, shut := c.writeQ.Get()
	if shut {
		return false
	}
	defer c.writeQ.Done(k)
	if err := c.limiter.Wait(ctx); err != nil {
		return false // ctx ended
	}
	c.write(ctx, k)
	return true
}

// write applies k's desired condition unless it was written already; a failure is
// retried after a per-export backoff.
func (c *Controller) write(ctx context.Context, k exportKey) {
	c.mu.Lock()
	want, ok := c.desired[k]
	prev, was := c.written[k]
	c.mu.Unlock()
	if !ok || (was && prev.same(want)) {
		c.writeQ.Forget(k)
		return
	}
	transition := c.opts.Now().UTC().Truncate(time.Second)
	if was && prev.created.Equal(want.created) && prev.cond.Conflict == want.cond.Conflict {
		transition = prev.transition
	}
	body, err := applyBody(k.NamespacedName, want.cond, transition)
	if err != nil { // cannot happen: the body is plain data
		c.log.Error("ServiceExport status not encoded", "cluster", k.Cluster, "namespace", k.Namespace, "service", k.Name, "error", err)
		return
	}
	err = c.opts.Patch(ctx, k.Cluster, k.NamespacedName, body)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		c.writesOK++
		if cur, ok := c.desired[k]; ok {
			c.written[k] = written{desired: want, transition: transition}
			if !cur.same(want) {
				c.writeQ.Add(k) // changed while it was written
			}
		}
		c.writeQ.Forget(k)
	case apierrors.IsNotFound(err):
		// The export is gone (or its CRD): the registry will say so; nothing to retry.
		c.writesFailed++
		c.lastErr, c.lastErrAt = fmt.Sprintf("cluster %s, ServiceExport %s: %v", k.Cluster, k.NamespacedName, err), c.opts.Now()
		c.writeQ.Forget(k)
	case ctx.Err() != nil:
	default:
		c.writesFailed++
		c.lastErr, c.lastErrAt = fmt.Sprintf("cluster %s, ServiceExport %s: %v", k.Cluster, k.NamespacedName, err), c.opts.Now()
		retry := c.writeQ.NumRequeues(k)
		c.log.Warn("ServiceExport status not written; retrying", "cluster", k.Cluster, "namespace", k.Namespace, "service", k.Name,
			"retries", retry, "forbidden", apierrors.IsForbidden(err), "error", err)
		c.writeQ.AddRateLimited(k)
	}
}

// applyBody is the server-side apply patch that sets cond on the ServiceExport.
func applyBody(svc types.NamespacedName, cond mcs.Condition, transition time.Time) ([]byte, error) {
	status := "False"
	if cond.Conflict {
		status = "True"
	}
	type condition struct {
		Type               string `json:"type"`
		Status             string `json:"status"`
		Reason             string `json:"reason"`
		Message            string `json:"message"`
		LastTransitionTime string `json:"lastTransitionTime"`
	}
	body := map[string]any{
		"apiVersion": APIVersion,
		"kind":       "ServiceExport",
		"metadata":   map[string]string{"name": svc.Name, "namespace": svc.Namespace},
		"status": map[string]any{"conditions": []condition{{
			Type: ConditionType, Status: status, Reason: cond.Reason, Message: cond.Message,
			LastTransitionTime: transition.UTC().Format(time.RFC3339),
		}}},
	}
	return json.Marshal(body)
}

// Status is what the controller reports.
type Status struct {
	// Writing says whether conditions are written (--mcs-export-status).
	Writing bool `json:"writing"`
	// ExportedServices counts the services some cluster exports; Conflicted those
	// with a conflict, of which Services lists at most Options.MaxListed, sorted.
	ExportedServices int               `json:"exportedServices"`
	Conflicted       int               `json:"conflicted"`
	Services         []ServiceConflict `json:"services,omitempty"`
	// ConflictingExports counts the exports whose value of a property is not used,
	// by reason.
	ConflictingExports map[mcs.Reason]int `json:"conflictingExports"`
	// WritesOK and WritesFailed count condition writes since start.
	WritesOK     uint64    `json:"writesOK"`
	WritesFailed uint64    `json:"writesFailed"`
	LastError    string    `json:"lastError,omitempty"`
	LastErrorAt  time.Time `json:"lastErrorAt,omitzero"`
}

// ServiceConflict is one service whose exports conflict.
type ServiceConflict struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Oldest    network.ClusterID `json:"oldest"`
	// Ports are the clusterset service's ports as resolved.
	Ports []mcs.Port `json:"ports"`
	// Conflicts lists at most maxConflictsListed; Total counts them all.
	Conflicts []mcs.Conflict `json:"conflicts"`
	Total     int            `json:"total"`
}

const maxConflictsListed = 10

// Status reports the conflicts and the writes.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Writing: c.opts.Write, ExportedServices: len(c.services), ConflictingExports: map[mcs.Reason]int{},
		WritesOK: c.writesOK, WritesFailed: c.writesFailed, LastError: c.lastErr, LastErrorAt: c.lastErrAt}
	for _, r := range mcs.Reasons {
		st.ConflictingExports[r] = 0
	}
	for svc, res := range c.services {
		if len(res.Conflicts) == 0 {
			continue
		}
		st.Conflicted++
		type lost struct {
			cluster network.ClusterID
			reason  mcs.Reason
		}
		seen := map[lost]bool{}
		for _, cf := range res.Conflicts {
			if l := (lost{cf.Cluster, cf.Reason}); !seen[l] {
				seen[l] = true
				st.ConflictingExports[cf.Reason]++
			}
		}
		sc := ServiceConflict{Namespace: svc.Namespace, Name: svc.Name, Oldest: res.Oldest, Ports: res.Ports,
			Conflicts: res.Conflicts, Total: len(res.Conflicts)}
		if len(sc.Conflicts) > maxConflictsListed {
			sc.Conflicts = sc.Conflicts[:maxConflictsListed]
		}
		st.Services = append(st.Services, sc)
	}
	slices.SortFunc(st.Services, func(a, b ServiceConflict) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	if len(st.Services) > c.opts.MaxListed {
		st.Services = st.Services[:c.opts.MaxListed]
	}
	return st
}

// Resolution returns the resolution of svc's exports, and whether any cluster
// exports it.
func (c *Controller) Resolution(svc types.NamespacedName) (mcs.Resolution, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res, ok := c.services[svc]
	return res, ok
}
