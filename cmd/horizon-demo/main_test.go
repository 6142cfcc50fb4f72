package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo builds horizon and the demo driver and runs the demo as `make demo` does:
// it must exit 0 with calls landing on both versions and each network's view shown,
// then fail over to v2 and back to v1 with helloworld PreferClose.
func TestDemo(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "../horizon", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	demo := exec.CommandContext(t.Context(), filepath.Join(bin, "horizon-demo"))
	demo.Env = append(os.Environ(), "HORIZON_EXAMPLES="+examples, "KEEP=")
	out, err := demo.CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"sidecar on network1:",
		"sidecar on network2:",
		"Hello version: v1, instance: helloworld-v1-0",
		"Hello version: v2, instance: helloworld-v2-0",
		"outbound_.5000_._.helloworld.sample.svc.cluster.local 192.0.2.12:5000",
		"done: calls landed on both versions",
		// Failover with helloworld PreferClose: v1 first, the gateway next.
		"priority 0  192.0.2.11:5000",
		"priority 1  192.0.2.20:443",
		"local: settled",
		"then v1=20",
		"local stopped: settled",
		"local not ready: settled",
		"local restarted, not ready: settled",
		"then v2=20",
		"local back: settled",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// Each network's view: network1 reaches v2 through the gateway, network2 directly.
	views := strings.SplitN(string(out), "sidecar on network2:", 2)
	if len(views) == 2 {
		line := func(view, addr string) bool {
			for _, l := range strings.Split(view, "\n") {
				if f := strings.Fields(l); len(f) >= 3 && f[0] == addr && f[1] == "weight" && f[2] == "1" {
					return true
				}
			}
			return false
		}
		net2, _, _ := strings.Cut(views[1], "==>")
		for _, c := range []struct {
			view, addr string
		}{{views[0], "192.0.2.11:5000"}, {views[0], "192.0.2.20:443"}, {net2, "192.0.2.11:5000"}, {net2, "192.0.2.12:5000"}} {
			if !line(c.view, c.addr) {
				t.Errorf("view lacks %s with weight 1", c.addr)
			}
		}
		if line(net2, "192.0.2.20:443") || line(views[0], "192.0.2.12:5000") {
			t.Error("a network sees the wrong address for v2")
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}
