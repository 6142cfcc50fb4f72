package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// hungBound is how soon a hung remote API server must show stale with the default
// probe flags.
const hungBound = 30 * time.Second

// TestHungRemoteClusterShownStale runs Horizon with its default flags and a remote
// cluster whose API server is then frozen with SIGSTOP: it accepts connections and
// answers nothing. /debug/clusterz shows the cluster stale within 30s, its endpoints
// still served (the grace runs); after SIGCONT it is synced again.
func TestHungRemoteClusterShownStale(t *testing.T) {
	ctx := t.Context()
	remote, err := env.StartCluster(ctx, "hung-remote")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remote.Kill)
	t.Cleanup(remote.Thaw) // runs first: nothing waits on a frozen server after the test
	if err := kubetest.Deploy(ctx, remote.Client, kubetest.Service{
		Namespace: "hung", Name: "web",
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		Backends: []kubetest.Backend{{Pod: "web-0", IP: "10.9.0.1", Ready: true}, {Pod: "web-1", IP: "10.9.0.2", Ready: true}},
	}); err != nil {
		t.Fatal(err)
	}
	kubeconfig, _, err := remote.MintKubeconfig(ctx, "istio-system", "horizon-reader")
	if err != nil {
		t.Fatal(err)
	}
	putSecret(t, "istio-system", "hung-remote", map[string][]byte{"hung": kubeconfig})

	opts := testOptions() // the registry's flags at their defaults
	if d := app.NewOptions().Registry; opts.Registry.ProbeInterval != d.ProbeInterval || opts.Registry.StaleGrace != d.StaleGrace {
		t.Fatalf("test options differ from the defaults: %+v", opts.Registry)
	}
	h := runHorizon(t, opts, cluster.Config)
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	status := func() (clusterregistry.ClusterStatus, error) {
		resp, err := client.Get("http://" + h.HTTPAddr().String() + "/debug/clusterz")
		if err != nil {
			return clusterregistry.ClusterStatus{}, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return clusterregistry.ClusterStatus{}, err
		}
		var cz app.ClusterzResponse
		if err := json.Unmarshal(b, &cz); err != nil {
			return clusterregistry.ClusterStatus{}, fmt.Errorf("decode /debug/clusterz: %w", err)
		}
		for _, c := range cz.Clusters {
			if c.ID == "hung" {
				return c, nil
			}
		}
		return clusterregistry.ClusterStatus{}, fmt.Errorf("no cluster hung in /debug/clusterz: %s", b)
	}
	waitState := func(state clusterregistry.SyncState, timeout time.Duration) clusterregistry.ClusterStatus {
		t.Helper()
		var st clusterregistry.ClusterStatus
		kubetest.Eventually(t, timeout, func() error {
			var err error
			if st, err = status(); err != nil {
				return err
			}
			if st.State != state || st.Endpoints != 2 {
				return fmt.Errorf("cluster hung: state %s, %d endpoints, want %s with 2", st.State, st.Endpoints, state)
			}
			return nil
		})
		return st
	}
	waitState(clusterregistry.StateSynced, 20*time.Second)

	frozen := time.Now()
	if err := remote.Freeze(); err != nil {
		t.Fatal(err)
	}
	st := waitState(clusterregistry.StateStale, hungBound)
	t.Logf("hung API server shown stale %s after SIGSTOP: %s", time.Since(frozen).Round(time.Millisecond), st.LastError)
	if st.Withdrawn || st.StaleSince.IsZero() {
		t.Errorf("stale status = %+v", st)
	}
	// During the grace the endpoints stay served.
	eps := h.Registry().Endpoints("web.hung.svc.cluster.local", 80)["hung"]
	if len(eps) != 2 {
		t.Errorf("endpoints served during the grace: %+v", eps)
	}

	thawed := time.Now()
	remote.Thaw()
	waitState(clusterregistry.StateSynced, 20*time.Second)
	t.Logf("synced again %s after SIGCONT", time.Since(thawed).Round(time.Millisecond))
}
