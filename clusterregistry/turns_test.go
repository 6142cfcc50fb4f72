package clusterregistry_test

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// TestInitialSyncTakesTurns lets one cluster list at a time and makes the first one
// hang in its list (its API server frozen): the clusters behind it wait their turn,
// shown pending and waiting, not stale; once the hung cluster's sync times out it
// gives its turn up, and the others sync one after the other and serve their
// endpoints. When the hung server continues, its cluster syncs too.
func TestInitialSyncTakesTurns(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	hung := startCluster(t, "turns-hung")
	const host = "web.turns-sample.svc.cluster.local"
	svc := kubetest.Service{
		Namespace: "turns-sample", Name: "web", Ports: []corev1.ServicePort{httpPort(80, 8080)},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.13.0.1", Ready: true}},
	}
	for _, c := range []*kubetest.Cluster{cluster, hung} {
		if err := kubetest.Deploy(ctx, c.Client, svc); err != nil {
			t.Fatal(err)
		}
	}
	const timeout = 10 * time.Second
	r, err := clusterregistry.New(clusterregistry.Options{
		DomainSuffix:           "cluster.local",
		Namespace:              "istio-system",
		SyncTimeout:            timeout,
		InitialSyncParallelism: 1,
		Logger:                 slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)

	if err := hung.Freeze(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hung.Thaw)
	r.SetCluster("hung", "test", hung.Config)
	// The hung cluster has the only turn once it no longer waits.
	kubetest.Eventually(t, 5*time.Second, func() error {
		if st := clusterStatus(r, "hung"); st.Waiting || st.State != clusterregistry.StatePending {
			return fmt.Errorf("hung cluster not listing: %+v", st)
		}
		return nil
	})
	// Three clusters on the shared API server, behind it.
	ids := []network.ClusterID{"turn-a", "turn-b", "turn-c"}
	for _, id := range ids {
		r.SetCluster(id, "test", cluster.Config)
	}
	for _, id := range ids {
		// The hung cluster holds the turn for the sync timeout, far longer than this
		// check takes.
		if st := clusterStatus(r, id); !st.Waiting || st.State != clusterregistry.StatePending || st.Stale {
			t.Errorf("cluster %s behind a hung one: want pending and waiting, got %+v", id, st)
		}
	}
	if r.HasSynced() {
		t.Error("registry synced while every cluster waits or lists")
	}

	kubetest.Eventually(t, timeout+60*time.Second, func() error {
		var errs []error
		for _, id := range ids {
			st := clusterStatus(r, id)
			if st.State != clusterregistry.StateSynced {
				errs = append(errs, fmt.Errorf("cluster %s is %s", id, st.State))
				continue
			}
			if st.Waiting || st.SyncDuration <= 0 {
				errs = append(errs, fmt.Errorf("synced cluster %s: %+v", id, st))
			}
			if got := addresses(r, host, 80, id); !slices.Equal(got, []string{"10.13.0.1"}) {
				errs = append(errs, fmt.Errorf("cluster %s serves %v", id, got))
			}
		}
		return errors.Join(errs...)
	})
	if st := clusterStatus(r, "hung"); st.State != clusterregistry.StateTimedOut {
		t.Errorf("hung cluster: want %s, got %+v", clusterregistry.StateTimedOut, st)
	}
	if !r.HasSynced() {
		t.Error("registry not synced with every cluster synced but a timed-out one")
	}
	// Each of them synced after the hung cluster's turn ended, one at a time: their
	// syncs do not overlap.
	var spans [][2]time.Time
	for _, id := range ids {
		st := clusterStatus(r, id)
		spans = append(spans, [2]time.Time{st.SyncedAt.Add(-st.SyncDuration), st.SyncedAt})
	}
	slices.SortFunc(spans, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	for i := 1; i < len(spans); i++ {
		if spans[i][0].Before(spans[i-1][1]) {
			t.Errorf("syncs overlap with one turn: %v", spans)
		}
	}

	hung.Thaw()
	waitState(t, r, "hung", clusterregistry.StateSynced, 60*time.Second)
	if got := addresses(r, host, 80, "hung"); !slices.Equal(got, []string{"10.13.0.1"}) {
		t.Errorf("hung cluster, back, serves %v", got)
	}
}
