package clusterregistry_test

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/horizon-mesh/horizon/clusterregistry"
)

func TestOptionsFlagsAndValidation(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		edit    func(*clusterregistry.Options)
		wantErr string // empty: valid
		check   func(*testing.T, clusterregistry.Options)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, o clusterregistry.Options) {
				if o.StaleGrace != 5*time.Minute || o.SyncTimeout != 30*time.Second || o.DomainSuffix != "cluster.local" ||
					o.ClusterQPS != 50 || o.ClusterBurst != 100 ||
					o.ProbeInterval != 5*time.Second || o.ProbeTimeout != 5*time.Second || o.ProbeFailures != 3 {
					t.Errorf("defaults = %+v", o)
				}
			},
		},
		{
			name: "stale grace set",
			args: []string{"--stale-cluster-grace=90s"},
			check: func(t *testing.T, o clusterregistry.Options) {
				if o.StaleGrace != 90*time.Second {
					t.Errorf("StaleGrace = %s", o.StaleGrace)
				}
			},
		},
		{name: "stale grace zero keeps endpoints", args: []string{"--stale-cluster-grace=0"}},
		{
			name: "MCS mode on",
			args: []string{"--mcs"},
			check: func(t *testing.T, o clusterregistry.Options) {
				if !o.MCS {
					t.Error("MCS off")
				}
			},
		},
		{name: "MCS mode with the clusterset domain as suffix", args: []string{"--mcs", "--domain-suffix=ClusterSet.local."},
			wantErr: `--domain-suffix: must not be the clusterset domain "clusterset.local" with --mcs`},
		{name: "clusterset domain as suffix without MCS", args: []string{"--domain-suffix=clusterset.local"}},
		{name: "negative stale grace", args: []string{"--stale-cluster-grace=-1s"}, wantErr: "--stale-cluster-grace: must not be negative"},
		{
			name: "client rate limit set",
			args: []string{"--remote-qps=20.5", "--remote-burst=40"},
			check: func(t *testing.T, o clusterregistry.Options) {
				if o.ClusterQPS != 20.5 || o.ClusterBurst != 40 {
					t.Errorf("ClusterQPS, ClusterBurst = %g, %d", o.ClusterQPS, o.ClusterBurst)
				}
			},
		},
		{name: "negative qps", args: []string{"--remote-qps=-1"}, wantErr: "--remote-qps: must not be negative"},
		{name: "negative burst", args: []string{"--remote-burst=-1"}, wantErr: "--remote-burst: must not be negative"},
		{
			name: "probes set",
			args: []string{"--remote-probe-interval=2s", "--remote-probe-timeout=1s", "--remote-probe-failures=4"},
			check: func(t *testing.T, o clusterregistry.Options) {
				if o.ProbeInterval != 2*time.Second || o.ProbeTimeout != time.Second || o.ProbeFailures != 4 {
					t.Errorf("ProbeInterval, ProbeTimeout, ProbeFailures = %s, %s, %d", o.ProbeInterval, o.ProbeTimeout, o.ProbeFailures)
				}
			},
		},
		{name: "negative probe interval", args: []string{"--remote-probe-interval=-1s"}, wantErr: "--remote-probe-interval: must be 0-10m"},
		{name: "probe interval too long", args: []string{"--remote-probe-interval=11m"}, wantErr: "--remote-probe-interval: must be 0-10m"},
		{name: "negative probe timeout", args: []string{"--remote-probe-timeout=-1s"}, wantErr: "--remote-probe-timeout: must be 0-1m"},
		{name: "probe timeout too long", args: []string{"--remote-probe-timeout=2m"}, wantErr: "--remote-probe-timeout: must be 0-1m"},
		{name: "negative probe failures", args: []string{"--remote-probe-failures=-1"}, wantErr: "--remote-probe-failures: must be 0-100"},
		{name: "too many probe failures", args: []string{"--remote-probe-failures=101"}, wantErr: "--remote-probe-failures: must be 0-100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o clusterregistry.Options
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			o.Namespace = "istio-system"
			if tt.edit != nil {
				tt.edit(&o)
			}
			err := o.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want %q", err, tt.wantErr)
			}
			if tt.wantErr != "" {
				if _, err := clusterregistry.New(o); err == nil {
					t.Fatal("New accepted invalid options")
				}
			}
			if tt.check != nil {
				tt.check(t, o)
			}
		})
	}
}
