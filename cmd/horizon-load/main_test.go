package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestRunSmall runs the whole tool against real API servers and a real horizon with
// tiny numbers: every proxy must be served, the change must reach every proxy that
// watches the changed service, churn must converge, and nothing may be rejected.
func TestRunSmall(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "horizon"), "../horizon")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build horizon: %v\n%s", err, out)
	}
	baseline := goleak.IgnoreCurrent()

	cfg := defaultConfig()
	cfg.Services, cfg.Endpoints, cfg.Proxies, cfg.Watch = 2, 2, 20, 2
	cfg.ProxiesPerConn = 8
	cfg.Changes = 1
	cfg.ChurnRate, cfg.ChurnDuration = 10, time.Second
	cfg.ChangeTimeout, cfg.ServeTimeout, cfg.Duration = 10*time.Second, 20*time.Second, 90*time.Second
	cfg.Settle = 100 * time.Millisecond
	cfg.Horizon = filepath.Join(bin, "horizon")
	cfg.Markdown = filepath.Join(t.TempDir(), "results.md")
	var progress, out bytes.Buffer
	cfg.Progress = &progress

	rep, err := run(t.Context(), cfg, &out)
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	t.Logf("report:\n%s", out.String())
	if rep.Served != cfg.Proxies {
		t.Errorf("served %d of %d proxies", rep.Served, cfg.Proxies)
	}
	if rep.Conns != 3 || rep.DeltaProxies != 10 {
		t.Errorf("%d connections and %d delta proxies, want 3 and 10", rep.Conns, rep.DeltaProxies)
	}
	if len(rep.Changes) != 1 {
		t.Fatalf("%d changes timed, want 1", len(rep.Changes))
	}
	if ch := rep.Changes[0]; ch.Watchers != cfg.Proxies || ch.Reached != ch.Watchers {
		t.Errorf("change reached %d of %d watching proxies, want all %d proxies (each watches every service)", ch.Reached, ch.Watchers, cfg.Proxies)
	}
	if rep.ChangeTimeouts != 0 || rep.ChangeLatency.N != cfg.Proxies {
		t.Errorf("%d change timeouts, %d latencies", rep.ChangeTimeouts, rep.ChangeLatency.N)
	}
	if rep.NACKs != 0 || rep.ClientNACKs != 0 {
		t.Errorf("NACKs: horizon counted %v, proxies sent %d", rep.NACKs, rep.ClientNACKs)
	}
	if rep.Churn == nil || !rep.Churn.Converged || rep.Churn.Writes == 0 {
		t.Errorf("churn: %+v", rep.Churn)
	}
	if rep.MemBefore.RSS == 0 || rep.MemWith.Heap == 0 || rep.Pushes == 0 {
		t.Errorf("memory %+v → %+v, %v pushes: want readings", rep.MemBefore, rep.MemWith, rep.Pushes)
	}
	if !rep.OK() {
		t.Error("report is not OK")
	}
	for _, want := range []string{
		"served          20 of 20 proxies",
		"reached 20/20",
		"timeouts        0",
		"horizon_xds_nacks_total 0",
		"Result: every proxy converged and every change reached every watching proxy",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	md, err := os.ReadFile(cfg.Markdown)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| proxies served | 20 / 20 | all |", "| change timeouts | 0 | 0 |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	goleak.VerifyNone(t, baseline)
}

func TestExpected(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network int
		counts  [2]int
		want    sig
	}{
		{"local and remote", 0, [2]int{10, 10}, sig{endpoints: 11, weight: 20}},
		{"remote added", 0, [2]int{10, 11}, sig{endpoints: 11, weight: 21}},
		{"remote added, seen from the remote network", 1, [2]int{10, 11}, sig{endpoints: 12, weight: 21}},
		{"no remote endpoints: no gateway", 0, [2]int{10, 0}, sig{endpoints: 10, weight: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := expected(tc.network, tc.counts); got != tc.want {
				t.Errorf("expected(%d, %v) = %+v, want %+v", tc.network, tc.counts, got, tc.want)
			}
		})
	}
}

func TestSigOf(t *testing.T) {
	ep := func(w uint32) *endpointv3.LbEndpoint {
		e := &endpointv3.LbEndpoint{}
		if w > 0 {
			e.LoadBalancingWeight = wrapperspb.UInt32(w)
		}
		return e
	}
	cla := &endpointv3.ClusterLoadAssignment{Endpoints: []*endpointv3.LocalityLbEndpoints{
		{LbEndpoints: []*endpointv3.LbEndpoint{ep(1), ep(0)}},
		{LbEndpoints: []*endpointv3.LbEndpoint{ep(10)}},
	}}
	if got, want := sigOf(cla), (sig{endpoints: 3, weight: 12}); got != want {
		t.Errorf("sigOf = %+v, want %+v (an unset weight counts 1)", got, want)
	}
}

func TestSpecs(t *testing.T) {
	const n, k, services = 1000, 20, 100
	sp := specs(n, k, services, 0.5)
	watched := map[string]int{}
	var perNetwork, delta [2]int
	for _, s := range sp {
		perNetwork[s.network]++
		if s.delta {
			delta[s.network]++
		}
		seen := map[string]bool{}
		for _, name := range s.names {
			if seen[name] {
				t.Fatalf("proxy %d watches %s twice", s.index, name)
			}
			seen[name] = true
			watched[name]++
		}
	}
	if len(watched) != services {
		t.Errorf("%d services watched, want all %d", len(watched), services)
	}
	if perNetwork != [2]int{500, 500} || delta != [2]int{250, 250} {
		t.Errorf("per network %v, delta %v; want half and half, a quarter each", perNetwork, delta)
	}
	if id := sp[3].node().GetId(); id != "sidecar~100.64.0.3~load-3.loadtest~loadtest.svc.cluster.local" {
		t.Errorf("node id %q", id)
	}
}

func TestParseMetrics(t *testing.T) {
	m := parseMetrics([]byte(`# HELP horizon_xds_nacks_total Responses rejected.
# TYPE horizon_xds_nacks_total counter
horizon_xds_nacks_total{type_url="a"} 2
horizon_xds_nacks_total{type_url="b{}"} 3
horizon_xds_pushes_total 7
go_memstats_heap_alloc_bytes 1.2345e+07
`))
	if m["horizon_xds_nacks_total"] != 5 || m["horizon_xds_pushes_total"] != 7 || m["go_memstats_heap_alloc_bytes"] != 12345000 {
		t.Errorf("parseMetrics = %v", m)
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := summarize(ds)
	if s.N != 100 || s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond {
		t.Errorf("summarize = %+v", s)
	}
	if (summarize(nil) != stats{}) {
		t.Error("summarize(nil) not zero")
	}
}

func TestParseFlags(t *testing.T) {
	var stderr bytes.Buffer
	cfg, err := parseFlags([]string{"-proxies", "10000", "-delta-fraction", "0.25", "-churn-rate", "20"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Proxies != 10000 || cfg.DeltaFraction != 0.25 || cfg.ChurnRate != 20 || cfg.Services != 100 {
		t.Errorf("parsed %+v", cfg)
	}
	if _, err := parseFlags([]string{"-endpoints", "0", "-delta-fraction", "2"}, &stderr); err == nil ||
		!strings.Contains(err.Error(), "-endpoints") || !strings.Contains(err.Error(), "-delta-fraction") {
		t.Errorf("invalid flags: error %v, want both named", err)
	}
}
