package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/eds"
)

// TestExamplesReadme checks examples/README.md against the files: its table lists
// every file, the files it names exist, its YAML applies cleanly to a real API server
// and its proxyless gRPC bootstrap is one grpc-go accepts.
func TestExamplesReadme(t *testing.T) {
	readme := string(readExample(t, "README.md"))
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if !strings.Contains(readme, "| [`"+name+"`]("+name+") |") {
			t.Errorf("the table of examples/README.md does not list %s", name)
		}
	}
	for _, m := range regexp.MustCompile(`examples/([a-z0-9-]+\.yaml)`).FindAllStringSubmatch(readme, -1) {
		if _, err := os.Stat(filepath.Join(examplesDir, m[1])); err != nil {
			t.Errorf("examples/README.md names %s: %v", m[0], err)
		}
	}

	blocks := map[string][]string{}
	for _, m := range regexp.MustCompile("(?s)```(yaml|json)\n(.*?)```").FindAllStringSubmatch(readme, -1) {
		blocks[m[1]] = append(blocks[m[1]], m[2])
	}
	if len(blocks["yaml"]) == 0 || len(blocks["json"]) != 1 {
		t.Fatalf("examples/README.md has %d YAML and %d JSON blocks, want some and one", len(blocks["yaml"]), len(blocks["json"]))
	}
	if err := kubetest.EnsureNamespace(t.Context(), third.Client, systemNamespace, nil); err != nil {
		t.Fatal(err)
	}
	for i, y := range blocks["yaml"] {
		applyManifest(t, third, fmt.Sprintf("YAML block %d of examples/README.md", i+1), []byte(y))
	}
	bootstrap := []byte(blocks["json"][0])
	if err := grpcAcceptsBootstrap(bootstrap); err != nil {
		t.Errorf("grpc-go refuses the proxyless bootstrap of examples/README.md: %v", err)
	}
	var b struct {
		Node                 json.RawMessage `json:"node"`
		CertificateProviders map[string]struct {
			Plugin string          `json:"plugin_name"`
			Config json.RawMessage `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal(bootstrap, &b); err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{}
	if err := protojson.Unmarshal(b.Node, node); err != nil {
		t.Fatal(err)
	}
	// Node's @grpc/grpc-js-xds refuses a bootstrap whose node has no locality
	// ("locality field missing in node element"), even an empty one.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b.Node, &fields); err != nil {
		t.Fatal(err)
	}
	if _, ok := fields["locality"]; !ok || node.GetLocality().GetRegion() == "" || node.GetLocality().GetZone() == "" {
		t.Errorf("the proxyless bootstrap's node has locality %v, want a region and a zone: Node's xDS client refuses a node without locality", node.GetLocality())
	}
	if got, want := eds.ViewOf(node), (eds.View{Role: eds.RoleGRPC, Network: "network1",
		Locality: clusterregistry.Locality{Region: "us-east1", Zone: "us-east1-b"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("Horizon sees the proxyless client as %+v, want %+v", got, want)
	}
	// grpc-go skips a provider whose plugin it does not know: the instance must be
	// one it builds.
	if p, ok := b.CertificateProviders[eds.CertProviderInstance]; !ok {
		t.Errorf("the proxyless bootstrap has no certificate provider instance %q", eds.CertProviderInstance)
	} else if _, err := certprovider.ParseConfig(p.Plugin, p.Config); err != nil {
		t.Errorf("certificate provider instance %q: %v", eds.CertProviderInstance, err)
	}
}

// grpcAcceptsBootstrap builds grpc-go's xDS resolver from bootstrap, which parses
// and checks it as a client does when it dials xds:///, then closes it again.
func grpcAcceptsBootstrap(bootstrap []byte) error {
	builder, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		return err
	}
	r, err := builder.Build(resolver.Target{URL: url.URL{Scheme: "xds", Path: "/" + eds.GRPCTarget(helloHost, 5000)}},
		nopClientConn{}, resolver.BuildOptions{})
	if err != nil {
		return err
	}
	r.Close()
	return nil
}

// nopClientConn is a gRPC channel that ignores what its resolver tells it.
type nopClientConn struct{}

func (nopClientConn) UpdateState(resolver.State) error { return nil }
func (nopClientConn) ReportError(error)                {}
func (nopClientConn) NewAddress([]resolver.Address)    {}
func (nopClientConn) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{Err: errors.New("no service config expected")}
}

// TestExamplesReadmeServeArgs: the flags examples/README.md adds to Horizon's
// Deployment (kubectl patch … deployment horizon, JSON patches appending args), with
// those horizon.yaml gives it, are flags of horizon serve that validate together.
func TestExamplesReadmeServeArgs(t *testing.T) {
	readme := string(readExample(t, "README.md"))
	var added []string
	for _, m := range regexp.MustCompile(`deployment horizon --type json \\\n\s+-p '(\[[^']*\])'`).FindAllStringSubmatch(readme, -1) {
		var ops []struct {
			Op    string `json:"op"`
			Path  string `json:"path"`
			Value string `json:"value"`
		}
		if err := json.Unmarshal([]byte(m[1]), &ops); err != nil {
			t.Fatalf("examples/README.md: JSON patch %s: %v", m[1], err)
		}
		for _, op := range ops {
			if op.Op != "add" || op.Path != "/spec/template/spec/containers/0/args/-" {
				t.Errorf("examples/README.md: JSON patch %s: want ops appending to the container's args", m[1])
			}
			added = append(added, op.Value)
		}
	}
	if !slices.Contains(added, "--mcs") || !slices.Contains(added, "--mcs-export-status") {
		t.Fatalf("examples/README.md adds %q to Horizon's args, want --mcs and --mcs-export-status", added)
	}
	var dep appsv1.Deployment
	exampleObjects(t, "horizon.yaml").get(t, "Deployment/"+systemNamespace+"/horizon", &dep)
	args := append(slices.Clone(dep.Spec.Template.Spec.Containers[0].Args), added...)
	opts := app.NewOptions()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		t.Fatalf("horizon.yaml's args with examples/README.md's %q: %v", added, err)
	}
	if err := opts.Validate(); err != nil {
		t.Fatalf("horizon.yaml's args with examples/README.md's %q: %v", added, err)
	}
	if !opts.Registry.MCS || !opts.ExportStatus.Write {
		t.Errorf("with %q, MCS mode %v and status writes %v, want both on", args, opts.Registry.MCS, opts.ExportStatus.Write)
	}
}
