package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRunHostile runs the hostile scenario at a hundredth of its size against real
// API servers and a real horizon: every flood must be sent in full and answered
// (whatever the answer), Horizon measured after each, and the well-behaved proxy
// must receive every remote change made meanwhile.
func TestRunHostile(t *testing.T) {
	bin := buildHorizon(t)
	baseline := goleak.IgnoreCurrent()
	cfg := defaultConfig()
	cfg.Scenario, cfg.HostileScale = scenarioHostile, 0.01
	cfg.Services, cfg.Endpoints = 3, 2
	cfg.ChangeTimeout, cfg.ServeTimeout, cfg.Duration = 10*time.Second, 20*time.Second, 2*time.Minute
	cfg.Settle = 100 * time.Millisecond
	cfg.Horizon = bin
	cfg.Markdown = filepath.Join(t.TempDir(), "results.md")
	var progress, out bytes.Buffer
	cfg.Progress = &progress

	rep, err := run(t.Context(), cfg, &out)
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	t.Logf("report:\n%s", out.String())
	h := rep.Hostile
	if h == nil {
		t.Fatal("no hostile result in the report")
	}
	if h.Base.RSS == 0 || h.Base.Heap == 0 || h.BaseSeries.Total == 0 {
		t.Errorf("base measurement %+v, %+v: want readings", h.Base, h.BaseSeries)
	}
	wantFloods := []string{"a. 20 unary Fetches", "b. 20 unary Fetches", "c. 20 router label sets", "d. requests with no node",
		"e. 200 NACKs", "f. 5000 made-up names", "g. 10 streams on one connection"}
	if len(h.Floods) != len(wantFloods) {
		t.Fatalf("%d floods, want %d", len(h.Floods), len(wantFloods))
	}
	for i, f := range h.Floods {
		if !strings.HasPrefix(f.Name, wantFloods[i]) {
			t.Errorf("flood %d is %q, want %q…", i, f.Name, wantFloods[i])
		}
		if f.Requests != f.Planned {
			t.Errorf("%s: sent %d of %d", f.Name, f.Requests, f.Planned)
		}
		answered := 0
		for _, n := range f.Outcomes {
			answered += n
		}
		if answered == 0 || f.Outcomes[noAnswer] == answered {
			t.Errorf("%s: outcomes %v: want answers", f.Name, f.Outcomes)
		}
		if !f.Reached || f.Change <= 0 {
			t.Errorf("%s: the remote change did not reach the well-behaved proxy (%s)", f.Name, f.Change)
		}
		// VmRSS and VmHWM are read one after the other from the kernel's approximate
		// per-CPU counters: the peak may read a little under the RSS read before it.
		if f.Mem.RSS == 0 || f.Mem.Heap == 0 || f.HWM+1<<20 < f.Mem.RSS || f.Series.Total == 0 || f.Groups == 0 {
			t.Errorf("%s: memory %+v, peak %d, series %+v: want readings", f.Name, f.Mem, f.HWM, f.Series)
		}
	}
	// One outcome per request for the unary floods, per stream for the held ones.
	for _, i := range []int{0, 1, 2, 3} {
		f, n := h.Floods[i], 0
		for _, c := range f.Outcomes {
			n += c
		}
		if n != f.Planned {
			t.Errorf("%s: %d outcomes %v, want one per request (%d)", f.Name, n, f.Outcomes, f.Planned)
		}
	}
	if !h.WatcherConsistent || h.WatcherReconnects != 0 || h.WatcherNACKs != 0 {
		t.Errorf("watcher: consistent %v, %d reconnects, %d NACKs", h.WatcherConsistent, h.WatcherReconnects, h.WatcherNACKs)
	}
	if !rep.OK() {
		t.Error("report is not OK")
	}
	for _, want := range []string{"Hostile clients", "only the watcher connected", "remote EndpointSlice change → watcher: 0.",
		"largest growth after a flood", "Result: every change reached the well-behaved proxy"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	md, err := os.ReadFile(cfg.Markdown)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| flood | outcomes | RSS after (Δ) | heap after (Δ) | groups |") || !strings.Contains(string(md), "| g. 10 streams on one connection") {
		t.Errorf("markdown lacks the hostile table:\n%s", md)
	}
	goleak.VerifyNone(t, baseline)
}

func TestCountSeries(t *testing.T) {
	page := `# HELP a_total A.
# TYPE a_total counter
a_total{type="x"} 1
a_total{type="y"} 2
b 3
h_bucket{le="1"} 1
h_bucket{le="+Inf"} 1
h_sum 0.5
h_count 1

`
	got := countSeries([]byte(page))
	if want := (seriesCount{Total: 7, Top: "a_total", TopSeries: 2}); got != want {
		t.Errorf("countSeries = %+v, want %+v (ties broken by name)", got, want)
	}
	if got := countSeries(nil); got.Total != 0 || got.String() != "0" {
		t.Errorf("empty page: %+v %q", got, got.String())
	}
}

func TestOutcomes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "OK"},
		{io.EOF, "OK"},
		{status.Error(codes.InvalidArgument, "unknown network"), "InvalidArgument"},
		{fmt.Errorf("wrapped: %w", status.Error(codes.ResourceExhausted, "limit")), "ResourceExhausted"},
		{errors.New("not a status"), "Unknown"},
	} {
		if got := outcome(tc.err); got != tc.want {
			t.Errorf("outcome(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	var tl tally
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tl.add([]string{"OK", "InvalidArgument", "InvalidArgument", noAnswer, "Aborted"}[i%5])
		}()
	}
	wg.Wait()
	if got, want := tl.counts().String(), "InvalidArgument 12, Aborted 6, OK 6, no answer in 5s 6"; got != want {
		t.Errorf("tally = %q, want %q (most first, then by name)", got, want)
	}
	if got := (outcomes{}).String(); got != "none" {
		t.Errorf("no outcomes: %q", got)
	}
}

func TestHostileVerdicts(t *testing.T) {
	base := memSample{RSS: 100 << 20, Heap: 10 << 20}
	flood := func(rss, heap uint64, series int, change time.Duration, reached bool) floodResult {
		return floodResult{Name: "x. a flood", Mem: memSample{RSS: rss, Heap: heap}, Series: seriesCount{Total: series},
			Change: change, Reached: reached, During: true, Outcomes: outcomes{"OK": 1}}
	}
	for _, tc := range []struct {
		name        string
		floods      []floodResult
		wantOK      bool
		wantMissed  int
		wantGrowth  string
		wantSlowest time.Duration
	}{
		{"within every target", []floodResult{
			flood(150<<20, 40<<20, 200, 100*time.Millisecond, true),
			flood(120<<20, 20<<20, 300, 300*time.Millisecond, true),
		}, true, 0, "RSS +50.0 MiB, heap +30.0 MiB", 300 * time.Millisecond},
		{"memory, latency and series missed but every change arrived", []floodResult{
			flood(400<<20, 300<<20, 20000, 3*time.Second, true),
		}, true, 3, "RSS +300.0 MiB, heap +290.0 MiB", 3 * time.Second},
		{"a change lost", []floodResult{
			flood(110<<20, 10<<20, 100, 0, false),
		}, false, 1, "RSS +10.0 MiB", 0},
		{"memory fell", []floodResult{
			flood(90<<20, 5<<20, 100, time.Millisecond, true),
		}, true, 0, "RSS +0.0 MiB, heap +0.0 MiB", time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &hostileResult{Base: base, BaseSeries: seriesCount{Total: 100}, Floods: tc.floods, WatcherConsistent: true}
			if got := r.ok(); got != tc.wantOK {
				t.Errorf("ok() = %v, want %v", got, tc.wantOK)
			}
			if got, _ := r.slowest(); got != tc.wantSlowest {
				t.Errorf("slowest() = %s, want %s", got, tc.wantSlowest)
			}
			var b bytes.Buffer
			r.write(&b)
			if got := strings.Count(b.String(), "MISSED"); got != tc.wantMissed {
				t.Errorf("%d targets MISSED, want %d:\n%s", got, tc.wantMissed, b.String())
			}
			if !strings.Contains(b.String(), "largest growth after a flood: "+tc.wantGrowth) {
				t.Errorf("report lacks growth %q:\n%s", tc.wantGrowth, b.String())
			}
		})
	}
	r := &hostileResult{Base: base, Floods: []floodResult{flood(100<<20, 10<<20, 1, time.Second, true)}, WatcherConsistent: true, WatcherNACKs: 1}
	if r.ok() {
		t.Error("ok() with a watcher that NACKed")
	}
}

func TestParseFlagsScenario(t *testing.T) {
	var stderr bytes.Buffer
	cfg, err := parseFlags(nil, &stderr)
	if err != nil || cfg.Scenario != scenarioFleet || cfg.HostileScale != 1 {
		t.Errorf("defaults: scenario %q, scale %g, %v", cfg.Scenario, cfg.HostileScale, err)
	}
	if cfg, err := parseFlags([]string{"-scenario", "hostile", "-hostile-scale", "0.5", "-hostile-floods", "ce"}, &stderr); err != nil ||
		cfg.Scenario != scenarioHostile || cfg.HostileScale != 0.5 || cfg.HostileFloods != "ce" {
		t.Errorf("-scenario hostile -hostile-scale 0.5 -hostile-floods ce: %q %g %q %v", cfg.Scenario, cfg.HostileScale, cfg.HostileFloods, err)
	}
	for _, args := range [][]string{{"-scenario", "flood"}, {"-hostile-scale", "0"}, {"-hostile-scale", "11"}, {"-hostile-floods", ""}, {"-hostile-floods", "abz"}} {
		if _, err := parseFlags(args, &stderr); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: error %v, want %s named", args, err, args[0])
		}
	}
}
