package e2e

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestPackageDirections enforces DESIGN.md's data flow: secrets → clusterregistry →
// eds, network a leaf shared by all, only eds (and its protocol server,
// eds/xdsserver, which knows nothing of networks, the registry or eds) speaking
// xDS, and only cmd/ wiring everything together (cmd/horizon/app assembles Horizon).
// The local-cluster runner (cmd/localmesh) stands in for the world around Horizon and
// knows none of it. What is under e2e/ is for tests only: no other package imports
// it, and nothing shipped links package testing.
func TestPackageDirections(t *testing.T) {
	const mod = "github.com/horizon-mesh/horizon/"
	out, err := exec.Command("go", "list", "-json=ImportPath,Name,Imports,Deps", "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	deps := map[string][]string{} // transitive, without tests
	var commands []string
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath string
			Name       string
			Imports    []string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkg := strings.TrimPrefix(p.ImportPath, mod)
		imports[pkg], deps[pkg] = p.Imports, p.Deps
		if p.Name == "main" {
			commands = append(commands, pkg)
		}
	}
	// What each package must not import (prefix match; module-relative for ours).
	forbidden := map[string][]string{
		"network":               {mod + "secrets", mod + "clusterregistry", mod + "eds", mod + "network/", "github.com/envoyproxy/"},
		"network/meshsource":    {mod + "secrets", mod + "clusterregistry", mod + "eds", "github.com/envoyproxy/"},
		"network/gatewaysource": {mod + "secrets", mod + "clusterregistry", mod + "eds", "github.com/envoyproxy/"},
		"secrets":               {mod + "clusterregistry", mod + "eds", "github.com/envoyproxy/"},
		"clusterregistry":       {mod + "secrets", mod + "eds", "github.com/envoyproxy/"},
		"eds":                   {mod + "secrets", mod + "network/meshsource", mod + "network/gatewaysource"},
		"eds/xdsserver":         {mod + "secrets", mod + "clusterregistry", mod + "network", mod + "eds"},
		// The Multi-Cluster Services rules are pure functions over network's IDs.
		"network/mcs": {mod + "secrets", mod + "clusterregistry", mod + "eds", mod + "network/meshsource", mod + "network/gatewaysource", "github.com/envoyproxy/", "k8s.io/client-go"},
	}

	// The assembly is Horizon itself: the local-cluster runner is not part of it. The
	// runner and its data plane stand in for clusters, pods and gateways: they know
	// nothing of Horizon's own packages.
	forbidden["cmd/horizon/app"] = []string{mod + "cmd/localmesh"}
	for _, pkg := range []string{"cmd/localmesh", "cmd/localmesh/dataplane"} {
		forbidden[pkg] = []string{mod + "secrets", mod + "clusterregistry", mod + "eds", mod + "network", mod + "cmd/horizon"}
	}
	for pkg, bad := range forbidden {
		got, ok := imports[pkg]
		if !ok {
			t.Errorf("package %s not found", pkg)
			continue
		}
		for _, imp := range got {
			for _, b := range bad {
				if strings.HasPrefix(imp, b) {
					t.Errorf("%s imports %s, against the design's package directions", pkg, imp)
				}
			}
		}
	}
	// Only cmd/ and the test harness may import go-control-plane besides eds and its
	// sub-packages.
	for pkg, got := range imports {
		if pkg == "eds" || strings.HasPrefix(pkg, "eds/") || strings.HasPrefix(pkg, "cmd/") || strings.HasPrefix(pkg, "e2e") {
			continue
		}
		for _, imp := range got {
			if strings.HasPrefix(imp, "github.com/envoyproxy/go-control-plane") {
				t.Errorf("%s imports %s: only eds speaks xDS", pkg, imp)
			}
		}
	}
	// Helpers only tests use live under e2e/; no package outside it imports them, and
	// no command (horizon, horizon-demo, horizon-load) links them or package testing,
	// directly or through a dependency.
	for pkg, got := range imports {
		if pkg == "e2e" || strings.HasPrefix(pkg, "e2e/") {
			continue
		}
		for _, imp := range got {
			if strings.HasPrefix(imp, mod+"e2e/") {
				t.Errorf("%s imports %s: packages under e2e/ are for tests only", pkg, imp)
			}
		}
	}
	if len(commands) == 0 {
		t.Error("no command found")
	}
	for _, cmd := range commands {
		for _, dep := range deps[cmd] {
			if dep == "testing" || strings.HasPrefix(dep, mod+"e2e/") {
				t.Errorf("command %s links %s", cmd, dep)
			}
		}
	}
}
