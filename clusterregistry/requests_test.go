package clusterregistry_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// TestAPIRequestsCounted watches a real API server as two clusters, one with a token
// it refuses, and an address nothing listens on: each cluster's informers' lists and
// watches show up under its own ID, verb and outcome, and under no label value
// outside the fixed sets.
func TestAPIRequestsCounted(t *testing.T) {
	r := newRegistry(t, 30*time.Second)
	r.SetCluster("counted", "test", cluster.Config)
	bad := rest.CopyConfig(cluster.Config)
	bad.BearerToken = "not-a-token"
	r.SetCluster("refused", "test", bad)
	dead := rest.CopyConfig(cluster.Config)
	dead.Host = "https://127.0.0.1:1"
	r.SetCluster("dead", "test", dead)
	waitSynced(t, r, "counted")

	requests := func() map[network.ClusterID]clusterregistry.APIRequests {
		out := map[network.ClusterID]clusterregistry.APIRequests{}
		for _, st := range r.Clusters() {
			out[st.ID] = st.APIRequests
		}
		return out
	}
	kubetest.Eventually(t, 20*time.Second, func() error {
		got := requests()
		// Services, EndpointSlices, Pods, Nodes and Namespaces: a list and a watch each.
		if c := got["counted"]; c[clusterregistry.VerbList][clusterregistry.Code2xx] < 5 || c[clusterregistry.VerbWatch][clusterregistry.Code2xx] < 5 {
			return fmt.Errorf("counted: %v, want at least 5 successful lists and 5 watches", c)
		}
		if c := got["refused"]; c[clusterregistry.VerbList][clusterregistry.Code4xx] == 0 {
			return fmt.Errorf("refused: %v, want lists answered 4xx", c)
		}
		if c := got["dead"]; c[clusterregistry.VerbList][clusterregistry.CodeError] == 0 {
			return fmt.Errorf("dead: %v, want lists without an answer", c)
		}
		return nil
	})
	got := requests()
	if n := got["refused"].Total() - got["refused"].Failed(); n != 0 {
		t.Errorf("refused: %d requests counted as 2xx: %v", n, got["refused"])
	}
	if n := got["dead"][clusterregistry.VerbList][clusterregistry.CodeError]; n != got["dead"].Total() {
		t.Errorf("dead: %v, want only lists without an answer", got["dead"])
	}
	if got["counted"].Failed() != 0 {
		t.Errorf("counted: %v, want no failures", got["counted"])
	}
	for id, a := range got {
		for verb, codes := range a {
			if !slices.Contains(clusterregistry.RequestVerbs, verb) {
				t.Errorf("%s: verb %q outside the fixed set", id, verb)
			}
			for code := range codes {
				if !slices.Contains(clusterregistry.RequestCodes, code) {
					t.Errorf("%s: code %q outside the fixed set", id, code)
				}
			}
		}
	}

	r.RemoveCluster("counted")
	if _, ok := requests()["counted"]; ok {
		t.Error("a removed cluster still reports requests")
	}
}
