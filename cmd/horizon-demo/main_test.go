package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo builds horizon and the demo driver and runs the demo as `make demo` does:
// it must exit 0 with calls landing on both versions and each network's view shown.
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
		"192.0.2.11:5000       weight 1",
		"192.0.2.20:443        weight 1",
		"sidecar on network2:",
		"192.0.2.12:5000       weight 1",
		"Hello version: v1, instance: helloworld-v1-0",
		"Hello version: v2, instance: helloworld-v2-0",
		"outbound_.5000_._.helloworld.sample.svc.cluster.local 192.0.2.12:5000",
		"done: calls landed on both versions",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}
