package exportstatus

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/mcs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hw = types.NamespacedName{Namespace: "sample", Name: "helloworld"}
)

// fakeSource holds exports by service.
type fakeSource struct {
	mu      sync.Mutex
	exports map[types.NamespacedName][]mcs.Export
}

func (f *fakeSource) set(svc types.NamespacedName, e ...mcs.Export) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exports[svc] = e
}

func (f *fakeSource) ServiceExports(svc types.NamespacedName) []mcs.Export {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.exports[svc]
}

func (f *fakeSource) ExportedServices() []types.NamespacedName {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []types.NamespacedName
	for svc, e := range f.exports {
		if len(e) > 0 {
			out = append(out, svc)
		}
	}
	return out
}

// patch is one call of the fake Patcher.
type patch struct {
	cluster network.ClusterID
	status  string
	reason  string
	message string
	at      time.Time
}

type fakePatcher struct {
	mu      sync.Mutex
	calls   []patch
	failing map[network.ClusterID]error
}

func (f *fakePatcher) patch(_ context.Context, cl network.ClusterID, svc types.NamespacedName, body []byte) error {
	var obj struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct{ Name, Namespace string }
		Status     struct {
			Conditions []struct{ Type, Status, Reason, Message, LastTransitionTime string }
		}
	}
	if err := json.Unmarshal(body, &obj); err != nil {
		return err
	}
	if obj.APIVersion != APIVersion || obj.Kind != "ServiceExport" || obj.Metadata.Name != svc.Name || obj.Metadata.Namespace != svc.Namespace ||
		len(obj.Status.Conditions) != 1 || obj.Status.Conditions[0].Type != "Conflict" || obj.Status.Conditions[0].LastTransitionTime == "" {
		return fmt.Errorf("malformed apply body %s", body)
	}
	c := obj.Status.Conditions[0]
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, patch{cluster: cl, status: c.Status, reason: c.Reason, message: c.Message, at: time.Now()})
	return f.failing[cl]
}

func (f *fakePatcher) snapshot() []patch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]patch(nil), f.calls...)
}

func (f *fakePatcher) fail(cl network.ClusterID, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing[cl] = err
}

func start(t *testing.T, write bool, src *fakeSource, p *fakePatcher) *Controller {
	t.Helper()
	c, err := New(Options{Write: write, Source: src, Patch: p.patch, QPS: 100, Burst: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// last returns the last patch of each cluster.
func last(calls []patch) map[network.ClusterID]patch {
	out := map[network.ClusterID]patch{}
	for _, c := range calls {
		out[c.cluster] = c
	}
	return out
}

func port(name string, n int32) mcs.Port { return mcs.Port{Name: name, Port: n, Protocol: "TCP"} }

func TestConflictWrittenAndResolved(t *testing.T) {
	src := &fakeSource{exports: map[types.NamespacedName][]mcs.Export{}}
	p := &fakePatcher{failing: map[network.ClusterID]error{}}
	src.set(hw,
		mcs.Export{Cluster: "cluster1", Created: t0, Ports: []mcs.Port{port("http", 5000)}},
		mcs.Export{Cluster: "cluster2", Created: t0.Add(time.Minute), Ports: []mcs.Port{port("http", 5001)}})
	c := start(t, true, src, p)

	kubetest.Eventually(t, 10*time.Second, func() error {
		got := last(p.snapshot())
		if got["cluster1"].status != "True" || got["cluster2"].status != "True" || got["cluster2"].reason != "PortConflict" {
			return fmt.Errorf("patches %+v, want Conflict True on both exports", got)
		}
		return nil
	})
	st := c.Status()
	if st.Conflicted != 1 || st.ConflictingExports[mcs.ReasonPortConflict] != 1 || len(st.Services) != 1 || st.Services[0].Oldest != "cluster1" {
		t.Errorf("status %+v, want one conflicted service, one export losing a port, cluster1 oldest", st)
	}
	// Nothing changed: resolving again writes nothing.
	n := len(p.snapshot())
	c.ResyncAll()
	c.Changed(hw)
	kubetest.Consistently(t, 300*time.Millisecond, func() error {
		if got := len(p.snapshot()); got != n {
			return fmt.Errorf("%d writes after an unchanged resync, want none", got-n)
		}
		return nil
	})

	// Resolved: both exports get False.
	src.set(hw,
		mcs.Export{Cluster: "cluster1", Created: t0, Ports: []mcs.Port{port("http", 5000)}},
		mcs.Export{Cluster: "cluster2", Created: t0.Add(time.Minute), Ports: []mcs.Port{port("http", 5000)}})
	c.Changed(hw)
	kubetest.Eventually(t, 10*time.Second, func() error {
		got := last(p.snapshot())
		if got["cluster1"].status != "False" || got["cluster2"].status != "False" || got["cluster2"].reason != "NoConflicts" {
			return fmt.Errorf("patches %+v, want Conflict False on both exports", got)
		}
		return nil
	})
	if st := c.Status(); st.Conflicted != 0 || st.ConflictingExports[mcs.ReasonPortConflict] != 0 || st.WritesOK != 4 {
		t.Errorf("status %+v, want no conflict and 4 writes", st)
	}
}

func TestNoWritesWithoutFlag(t *testing.T) {
	src := &fakeSource{exports: map[types.NamespacedName][]mcs.Export{}}
	p := &fakePatcher{failing: map[network.ClusterID]error{}}
	src.set(hw,
		mcs.Export{Cluster: "cluster1", Created: t0, Ports: []mcs.Port{port("http", 5000)}},
		mcs.Export{Cluster: "cluster2", Created: t0.Add(time.Minute), Ports: []mcs.Port{port("http", 5001)}})
	c := start(t, false, src, p)
	kubetest.Eventually(t, 10*time.Second, func() error {
		if st := c.Status(); st.Conflicted != 1 {
			return fmt.Errorf("status %+v, want the conflict reported", st)
		}
		return nil
	})
	kubetest.Consistently(t, 300*time.Millisecond, func() error {
		if calls := p.snapshot(); len(calls) > 0 {
			return fmt.Errorf("wrote %+v without --mcs-export-status", calls)
		}
		return nil
	})
}

// TestFailedWriteRetriedWithBackoff: a refused write is counted and retried after a
// backoff, not at once; the other cluster's write is not held up; once allowed, it
// lands.
func TestFailedWriteRetriedWithBackoff(t *testing.T) {
	src := &fakeSource{exports: map[types.NamespacedName][]mcs.Export{}}
	p := &fakePatcher{failing: map[network.ClusterID]error{}}
	p.fail("cluster2", apierrors.NewForbidden(schema.GroupResource{Group: "multicluster.x-k8s.io", Resource: "serviceexports/status"}, "helloworld", nil))
	src.set(hw,
		mcs.Export{Cluster: "cluster1", Created: t0, Ports: []mcs.Port{port("http", 5000)}},
		mcs.Export{Cluster: "cluster2", Created: t0.Add(time.Minute), Ports: []mcs.Port{port("http", 5001)}})
	c := start(t, true, src, p)
	var tries []time.Time
	kubetest.Eventually(t, 20*time.Second, func() error {
		tries = nil
		for _, call := range p.snapshot() {
			if call.cluster == "cluster2" {
				tries = append(tries, call.at)
			}
		}
		if len(tries) < 2 {
			return fmt.Errorf("%d writes to cluster2, want a retry", len(tries))
		}
		return nil
	})
	if gap := tries[1].Sub(tries[0]); gap < 900*time.Millisecond {
		t.Errorf("retried after %s, want a backoff of at least 1s", gap)
	}
	st := c.Status()
	if st.WritesFailed < 2 || st.LastError == "" || st.WritesOK < 1 {
		t.Errorf("status %+v, want the failures counted and cluster1's write done", st)
	}
	p.fail("cluster2", nil)
	kubetest.Eventually(t, 20*time.Second, func() error {
		if got := c.Status().WritesOK; got != 2 {
			return fmt.Errorf("%d writes done, want 2", got)
		}
		return nil
	})
}

func TestExportGoneForgotten(t *testing.T) {
	src := &fakeSource{exports: map[types.NamespacedName][]mcs.Export{}}
	p := &fakePatcher{failing: map[network.ClusterID]error{}}
	src.set(hw,
		mcs.Export{Cluster: "cluster1", Created: t0, Ports: []mcs.Port{port("http", 5000)}},
		mcs.Export{Cluster: "cluster2", Created: t0.Add(time.Minute), Ports: []mcs.Port{port("http", 5001)}})
	c := start(t, true, src, p)
	kubetest.Eventually(t, 10*time.Second, func() error {
		if got := c.Status().WritesOK; got != 2 {
			return fmt.Errorf("%d writes, want 2", got)
		}
		return nil
	})
	src.set(hw)
	c.Changed(hw)
	kubetest.Eventually(t, 10*time.Second, func() error {
		if st := c.Status(); st.ExportedServices != 0 || st.Conflicted != 0 {
			return fmt.Errorf("status %+v, want the service gone", st)
		}
		return nil
	})
	if n := len(p.snapshot()); n != 2 {
		t.Errorf("%d writes, want none to exports that are gone", n)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{QPS: -1, Burst: 1}, "--mcs-export-status-qps"},
		{Options{QPS: 1, Burst: 0}, "--mcs-export-status-burst"},
		{Options{QPS: 1, Burst: 100000}, "--mcs-export-status-burst"},
	} {
		if err := tc.o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.o, err, tc.want)
		}
	}
}

// TestRecreatedExportWrittenAgain: an export deleted and created again between two
// resolutions has no status any more; the same condition is written to it again.
func TestRecreatedExportWrittenAgain(t *testing.T) {
	src := &fakeSource{exports: map[types.NamespacedName][]mcs.Export{}}
	p := &fakePatcher{failing: map[network.ClusterID]error{}}
	src.set(hw, mcs.Export{Cluster: "cluster1", Created: t0, Ports: []mcs.Port{port("http", 5000)}})
	c := start(t, true, src, p)
	kubetest.Eventually(t, 10*time.Second, func() error {
		if n := len(p.snapshot()); n != 1 {
			return fmt.Errorf("%d writes, want 1", n)
		}
		return nil
	})
	src.set(hw, mcs.Export{Cluster: "cluster1", Created: t0.Add(time.Hour), Ports: []mcs.Port{port("http", 5000)}})
	c.Changed(hw)
	kubetest.Eventually(t, 10*time.Second, func() error {
		if n := len(p.snapshot()); n != 2 {
			return fmt.Errorf("%d writes, want the recreated export written again", n)
		}
		return nil
	})
}
