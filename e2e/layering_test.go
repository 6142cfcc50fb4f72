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
// xDS, and only cmd/ wiring everything together.
func TestPackageDirections(t *testing.T) {
	const mod = "github.com/horizon-mesh/horizon/"
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		imports[strings.TrimPrefix(p.ImportPath, mod)] = p.Imports
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
}
