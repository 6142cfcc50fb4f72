package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/horizon-mesh/horizon/cmd/localmesh"
)

// horizonProc is a running `horizon serve`.
type horizonProc struct {
	cmd      *exec.Cmd
	xdsAddr  string
	httpAddr string
	logPath  string
	done     chan struct{}
	err      error // set before done is closed
	client   *http.Client
}

// findHorizon returns the horizon binary: -horizon, else the one next to this
// program (as `make build` puts them), else one built into dir.
func findHorizon(ctx context.Context, cfg config, dir string) (string, error) {
	if cfg.Horizon != "" {
		if _, err := os.Stat(cfg.Horizon); err != nil {
			return "", fmt.Errorf("-horizon: %w", err)
		}
		return cfg.Horizon, nil
	}
	if self, err := os.Executable(); err == nil {
		next := filepath.Join(filepath.Dir(self), "horizon")
		if st, err := os.Stat(next); err == nil && !st.IsDir() {
			return next, nil
		}
	}
	out := filepath.Join(dir, "horizon")
	build := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/horizon-mesh/horizon/cmd/horizon")
	if b, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build horizon (run from the repository, or pass -horizon): %v: %s", err, bytes.TrimSpace(b))
	}
	return out, nil
}

// startHorizon runs `horizon serve` against the config cluster's kubeconfig, as
// cluster1, on free loopback ports, with pprof on (the tool forces a GC through it
// before reading the heap). Its log goes to dir/<name>.log.
func startHorizon(bin, kubeconfig, dir, name string, extra []string) (*horizonProc, error) {
	addrs, err := localmesh.FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	h := &horizonProc{
		xdsAddr: addrs[0], httpAddr: addrs[1], logPath: filepath.Join(dir, name+".log"),
		done:   make(chan struct{}),
		client: &http.Client{Timeout: 2 * time.Minute},
	}
	logf, err := os.Create(h.logPath)
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--kubeconfig", kubeconfig, "--cluster-id", clusterName(0),
		"--namespace", systemNamespace, "--xds-address", h.xdsAddr, "--http-address", h.httpAddr, "--pprof"}, extra...)
	h.cmd = exec.Command(bin, args...)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start horizon: %w", err)
	}
	go func() {
		h.err = h.cmd.Wait()
		logf.Close()
		close(h.done)
	}()
	return h, nil
}

// stop sends SIGTERM and waits for a graceful exit, killing Horizon after 15s.
func (h *horizonProc) stop() {
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(15 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
	h.client.CloseIdleConnections()
}

// kill ends Horizon at once with SIGKILL, as a crashed pod or a lost node would:
// every stream to it breaks. It waits for the process.
func (h *horizonProc) kill() {
	_ = h.cmd.Process.Kill()
	<-h.done
	h.client.CloseIdleConnections()
}

// exited returns an error if Horizon is no longer running.
func (h *horizonProc) exited() error {
	select {
	case <-h.done:
		return fmt.Errorf("horizon exited: %v (log %s)", h.err, h.logPath)
	default:
		return nil
	}
}

func (h *horizonProc) get(ctx context.Context, path string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.httpAddr+path, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

// waitHTTP polls /healthz every 10ms until Horizon answers HTTP.
func (h *horizonProc) waitHTTP(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if err := h.exited(); err != nil {
			return err
		}
		_, code, err := h.get(ctx, "/healthz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("horizon did not answer HTTP within %s: %v (log %s)", timeout, err, h.logPath)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitReady polls /readyz every 20ms until it answers 200.
func (h *horizonProc) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if err := h.exited(); err != nil {
			return err
		}
		b, code, err := h.get(ctx, "/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("/readyz: %d %s", code, bytes.TrimSpace(b))
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("horizon not ready within %s: %v (log %s)", timeout, last, h.logPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// clusterSync is what Horizon's /debug/clusterz says of one cluster's initial sync.
// SyncedAt is when its informers had synced and the startup backlog was processed.
type clusterSync struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	Services  int       `json:"services"`
	Endpoints int       `json:"endpoints"`
	Started   time.Time `json:"started"`
	SyncedAt  time.Time `json:"syncedAt"`
	// Scope holds the objects the cluster's caches hold.
	Scope struct {
		Services       int `json:"cachedServices"`
		EndpointSlices int `json:"cachedEndpointSlices"`
		Pods           int `json:"cachedPods"`
	} `json:"scope"`
	// APIRequests counts the requests Horizon sent the cluster's API server: verb →
	// HTTP status class (or "error") → requests.
	APIRequests map[string]map[string]uint64 `json:"apiRequests"`
}

// objects is the number of objects the cluster's caches hold.
func (s clusterSync) objects() int { return s.Scope.Services + s.Scope.EndpointSlices + s.Scope.Pods }

// requests sums the cluster's API requests of verb ("" for every verb), and those of
// them that got no 2xx answer.
func (s clusterSync) requests(verb string) (all, failed uint64) {
	for v, codes := range s.APIRequests {
		if verb != "" && v != verb {
			continue
		}
		for code, n := range codes {
			all += n
			if code != "2xx" {
				failed += n
			}
		}
	}
	return all, failed
}

// clusters reads every cluster's sync from /debug/clusterz.
func (h *horizonProc) clusters(ctx context.Context) ([]clusterSync, error) {
	b, code, err := h.get(ctx, "/debug/clusterz")
	if err != nil {
		return nil, fmt.Errorf("read horizon /debug/clusterz: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("read horizon /debug/clusterz: status %d", code)
	}
	var resp struct {
		Clusters []clusterSync `json:"clusters"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("decode horizon /debug/clusterz: %w", err)
	}
	return resp.Clusters, nil
}

// metrics reads /metrics and sums each metric's samples over their labels.
func (h *horizonProc) metrics(ctx context.Context) (map[string]float64, error) {
	b, code, err := h.get(ctx, "/metrics")
	if err != nil {
		return nil, fmt.Errorf("read horizon /metrics: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("read horizon /metrics: status %d", code)
	}
	return parseMetrics(b), nil
}

// histogram reads the cumulative buckets of a Prometheus histogram (summed over
// its other labels) from Horizon's /metrics.
func (h *horizonProc) histogram(ctx context.Context, name string) (buckets, error) {
	b, code, err := h.get(ctx, "/metrics")
	if err != nil {
		return nil, fmt.Errorf("read horizon /metrics: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("read horizon /metrics: status %d", code)
	}
	return parseBuckets(b, name), nil
}

// buckets is a histogram's cumulative counts by upper bound (+Inf included).
type buckets map[float64]float64

func parseBuckets(b []byte, name string) buckets {
	out := buckets{}
	prefix := name + "_bucket{"
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		i := strings.Index(rest, `le="`)
		j := strings.LastIndexByte(rest, '}')
		if i < 0 || j < i {
			continue
		}
		le, _, _ := strings.Cut(rest[i+4:], `"`)
		bound, err1 := strconv.ParseFloat(le, 64)
		fields := strings.Fields(rest[j+1:])
		if err1 != nil || len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			out[bound] += v
		}
	}
	return out
}

// since returns the counts observed after before.
func (b buckets) since(before buckets) buckets {
	out := make(buckets, len(b))
	for le, v := range b {
		out[le] = v - before[le]
	}
	return out
}

// quantile estimates the q-quantile as Prometheus's histogram_quantile does:
// linear within the bucket it falls in; the highest finite bound if it falls in
// +Inf; 0 with no observations.
func (b buckets) quantile(q float64) time.Duration {
	bounds := slices.Sorted(maps.Keys(b))
	if len(bounds) == 0 || b[bounds[len(bounds)-1]] == 0 {
		return 0
	}
	rank := q * b[bounds[len(bounds)-1]]
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		if b[le] >= rank {
			if math.IsInf(le, 1) {
				return time.Duration(lower * float64(time.Second))
			}
			frac := 0.0
			if n := b[le] - below; n > 0 {
				frac = (rank - below) / n
			}
			return time.Duration((lower + (le-lower)*frac) * float64(time.Second))
		}
		lower, below = le, b[le]
	}
	return time.Duration(lower * float64(time.Second))
}

// parseMetrics sums the samples of each metric in the Prometheus text format.
func parseMetrics(b []byte) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			if i := strings.LastIndexByte(rest, '}'); i >= 0 {
				rest = rest[i+1:]
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out
}

// memSample is Horizon's memory at one moment.
type memSample struct {
	RSS uint64 // VmRSS, bytes
	// HWM is VmHWM: the peak RSS since Horizon started, read with RSS.
	HWM    uint64
	Heap   uint64 // go_memstats_heap_alloc_bytes right after forced GCs
	Stacks uint64 // go_memstats_stack_inuse_bytes
	// FreeHeld is heap the runtime has freed but not yet returned to the OS
	// (heap_idle − heap_released): counted in RSS, reusable without asking the OS.
	FreeHeld   uint64
	Goroutines int
}

// memory forces two GCs in Horizon (through pprof's heap endpoint), then reads its
// VmRSS and live Go heap. The second GC frees what the first only moved out of
// sync.Pools (gRPC's buffers live there) or left to finalizers; after one, the heap
// reads up to twice its live size.
func (h *horizonProc) memory(ctx context.Context) (memSample, error) {
	for range 2 {
		if _, code, err := h.get(ctx, "/debug/pprof/heap?gc=1"); err != nil || code != http.StatusOK {
			return memSample{}, fmt.Errorf("force a GC in horizon: %v (status %d)", err, code)
		}
	}
	rss, err := h.rss()
	if err != nil {
		return memSample{}, err
	}
	hwm, err := h.status("VmHWM:")
	if err != nil {
		return memSample{}, err
	}
	m, err := h.metrics(ctx)
	if err != nil {
		return memSample{}, err
	}
	// The kernel batches RSS counters per thread: a peak read just after RSS can
	// trail it.
	return memSample{RSS: rss, HWM: max(hwm, rss), Heap: uint64(m["go_memstats_heap_alloc_bytes"]),
		Stacks: uint64(m["go_memstats_stack_inuse_bytes"]), Goroutines: int(m["go_goroutines"]),
		FreeHeld: uint64(max(m["go_memstats_heap_idle_bytes"]-m["go_memstats_heap_released_bytes"], 0))}, nil
}

// rss reads VmRSS of the horizon process.
func (h *horizonProc) rss() (uint64, error) { return h.status("VmRSS:") }

// status reads one memory line of the horizon process's /proc/<pid>/status (e.g.
// "VmRSS:", "VmHWM:"), in bytes.
func (h *horizonProc) status(key string) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read horizon's memory: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					return kb << 10, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("read horizon's memory: no %s line in /proc/<pid>/status", key)
}

// saveProfile writes one pprof profile (e.g. "profile?seconds=10", "heap") to path.
func (h *horizonProc) saveProfile(ctx context.Context, query, path string) error {
	b, code, err := h.get(ctx, "/debug/pprof/"+query)
	if err != nil {
		return fmt.Errorf("profile %s: %w", query, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("profile %s: status %d", query, code)
	}
	return os.WriteFile(path, b, 0o644)
}
