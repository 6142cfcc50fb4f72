package kubetest

import (
	"os"
	"strings"
	"testing"

	"github.com/horizon-mesh/horizon/cmd/localmesh/dataplane"
)

// RunInNetns makes the calling test run in a private network namespace, whose
// loopback can hold pod and gateway addresses, with env set in its environment. In the
// test process it re-executes the test binary for this test alone in a new namespace,
// logs the lines of file (the test's source file name) and the result, fails t if the
// test failed there, and returns true: the caller returns at once. In the namespace it
// returns false and the caller runs the test's body.
func RunInNetns(t *testing.T, file string, env ...string) bool {
	t.Helper()
	if dataplane.InNetns() {
		return false
	}
	name := t.Name()
	cmd, err := dataplane.ReexecCommand([]string{os.Args[0], "-test.run=^" + name + "$", "-test.v", "-test.count=1", "-test.timeout=5m"}, env...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, file) || strings.HasPrefix(strings.TrimSpace(line), "---") {
			t.Log(line)
		}
	}
	if err != nil || !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("%s in its network namespace failed (%v):\n%s", name, err, out)
	}
	return true
}
