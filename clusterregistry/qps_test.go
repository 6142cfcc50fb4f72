package clusterregistry

import (
	"testing"

	"k8s.io/client-go/rest"
)

// TestClusterClientRateLimit checks that each cluster's client is limited as
// Options say, unless its client config sets a limit of its own.
func TestClusterClientRateLimit(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		cfgQPS    float32
		wantQPS   float32
		wantBurst int
	}{
		{name: "defaults", wantQPS: defaultClusterQPS, wantBurst: defaultClusterBurst},
		{name: "set", opts: Options{ClusterQPS: 7, ClusterBurst: 9}, wantQPS: 7, wantBurst: 9},
		{name: "a config's own limit wins", opts: Options{ClusterQPS: 7, ClusterBurst: 9}, cfgQPS: 3, wantQPS: 3, wantBurst: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.DomainSuffix, tt.opts.Namespace = "cluster.local", "istio-system"
			r, err := New(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			// Not started: nothing connects.
			c, err := newCluster(r.clusterOptions("c1"), "c1", "test", &rest.Config{Host: "https://127.0.0.1:1", QPS: tt.cfgQPS, Burst: 10})
			if err != nil {
				t.Fatal(err)
			}
			defer c.cancel()
			rl := c.client.CoreV1().RESTClient().GetRateLimiter()
			if rl == nil {
				t.Fatal("no rate limiter")
			}
			if got := rl.QPS(); got != tt.wantQPS {
				t.Errorf("QPS = %g, want %g", got, tt.wantQPS)
			}
			if tt.cfgQPS == 0 {
				// client-go's limiter does not expose its burst; check the config.
				if got := c.opts.burst; got != tt.wantBurst {
					t.Errorf("burst = %d, want %d", got, tt.wantBurst)
				}
			}
		})
	}
}
