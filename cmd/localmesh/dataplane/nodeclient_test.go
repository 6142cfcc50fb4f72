package dataplane

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeClientUsage checks that the Node client refuses bad arguments with exit
// status 2 and a message naming the flag, before it dials anything.
func TestNodeClientUsage(t *testing.T) {
	modules, err := InstallNodeClient(t.Context(), "../../..")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join("../../..", NodeClientDir, "client.js")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no target", []string{"--calls", "1"}, `--target "": want xds:///<host>:<port>`},
		{"not xds", []string{"--target", "dns:///a:1", "--calls", "1"}, "--target"},
		{"zero calls", []string{"--target", "xds:///a:1", "--calls", "0"}, "--calls 0: want 1 to 10000"},
		{"too many calls", []string{"--target", "xds:///a:1", "--calls", "10001"}, "--calls 10001: want 1 to 10000"},
		{"calls not a number", []string{"--target", "xds:///a:1", "--calls", "1e3"}, `--calls "1e3": want a whole number`},
		{"timeout too long", []string{"--target", "xds:///a:1", "--calls", "1", "--timeout-ms", "60001"}, "--timeout-ms 60001"},
		{"calls and stdin", []string{"--target", "xds:///a:1", "--calls", "1", "--stdin"}, "exactly one of --calls N and --stdin"},
		{"neither", []string{"--target", "xds:///a:1"}, "exactly one of --calls N and --stdin"},
		{"unknown flag", []string{"--target", "xds:///a:1", "--calls", "1", "--insecure"}, `unknown argument "--insecure"`},
		{"sni too long", []string{"--target", "xds:///a:1", "--calls", "1", "--sni", strings.Repeat("a", 254)}, "--sni"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), "node", append([]string{script}, tc.args...)...)
			cmd.Env = append(cmd.Environ(), "NODE_PATH="+modules)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("exit %v, want status 2; output:\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output %q does not say %q", out, tc.want)
			}
		})
	}
}
