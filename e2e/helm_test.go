package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/tlstest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/meshsource"
)

// The chart tests check charts/ as an operator uses it: helm (built from the Go module
// proxy by hack/helm.sh) lints and renders the charts, the rendered objects apply
// cleanly to a real API server, the identities they create may do what Horizon does
// and nothing more (impersonated, as examples_rbac_test.go checks the examples), and
// the default rendering says what examples/horizon.yaml and remote-reader.yaml say.

const (
	chartsDir     = "../charts"
	horizonChart  = chartsDir + "/horizon"
	readerChart   = chartsDir + "/horizon-reader"
	chartTLSMount = "/etc/horizon/xds-tls"
)

var helmPath = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("HORIZON_HELM"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	// Builds helm into the cache the first time on a machine (make helm does the same).
	var stderr bytes.Buffer
	cmd := exec.Command("bash", "../hack/helm.sh")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/helm.sh: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
})

// helm runs helm with args and returns its standard output, or an error holding its
// standard error.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	bin, err := helmPath()
	if err != nil {
		t.Fatalf("no helm: %v", err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), bin, args...)
	// No repositories, plugins or caches of the user's: everything helm writes stays in
	// the test's directory.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.Bytes(), nil
}

// valuesFile writes values to a file for helm's --values.
func valuesFile(t *testing.T, values map[string]any) string {
	t.Helper()
	data, err := yaml.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// renderChart renders chart as release name in the system namespace, with values.
func renderChart(t *testing.T, chart, name string, values map[string]any) []byte {
	t.Helper()
	args := []string{"template", name, chart, "--namespace", systemNamespace}
	if values != nil {
		args = append(args, "--values", valuesFile(t, values))
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rendered holds the objects of a rendering, by kind/namespace/name.
type rendered map[string]*unstructured.Unstructured

func parseRendered(t *testing.T, data []byte) rendered {
	t.Helper()
	objs, err := kubetest.ParseManifests(data)
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{}
	for _, o := range objs {
		k := o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
		if _, dup := r[k]; dup {
			t.Errorf("%s rendered twice", k)
		}
		r[k] = o
	}
	return r
}

func (r rendered) keys() []string {
	var out []string
	for k := range r {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// get converts the object kind/ns/name into out, failing if there is none.
func (r rendered) get(t *testing.T, key string, out any) {
	t.Helper()
	o, ok := r[key]
	if !ok {
		t.Fatalf("no %s in the rendering; it holds %q", key, r.keys())
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, out, true); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
}

func exampleObjects(t *testing.T, file string) rendered {
	t.Helper()
	return parseRendered(t, readExample(t, file))
}

// TestHelmLint lints both charts with their default values and with values that turn
// every option on, and checks that bad values are refused with their name.
func TestHelmLint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chart  string
		values map[string]any
	}{
		{"horizon defaults", horizonChart, nil},
		{"horizon every option", horizonChart, everyOptionValues(t)},
		{"reader defaults", readerChart, nil},
		{"reader without token Secret", readerChart, map[string]any{"tokenSecret": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"lint", "--strict", tc.chart, "--namespace", systemNamespace}
			if tc.values != nil {
				args = append(args, "--values", valuesFile(t, tc.values))
			}
			if out, err := helm(t, args...); err != nil {
				t.Error(err)
			} else if !strings.Contains(string(out), "0 chart(s) failed") {
				t.Errorf("helm lint: %s", out)
			}
		})
	}

	// Bad values: helm refuses them, naming the value.
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"replicas=2"}, "replicas"},
		{[]string{"replicaCount=-1"}, "replicaCount"},
		{[]string{"xds.port=70000"}, "port"},
		{[]string{"clusterID="}, "clusterID"},
		{[]string{"clusterID=a/b"}, "clusterID"},
		{[]string{"image.digest=latest"}, "digest"},
		{[]string{"logLevel=verbose"}, "logLevel"},
		{[]string{"xds.tls.key=k"}, "xds.tls.cert"},
		{[]string{"xds.tls.cert=c"}, "xds.tls.key"},
		{[]string{"xds.tls.cert=c", "xds.tls.key=k"}, "xds.tls.clientCA"},
		{[]string{"xds.tls.existingSecret=s", "xds.tls.cert=c"}, "xds.tls"},
		{[]string{"xds.allowPlaintextRemote=false"}, "xds.allowPlaintextRemote"},
		{[]string{"serviceAccount.create=false"}, "serviceAccount.name"},
		{[]string{"remoteSecretsNamespace=Not_A_Namespace"}, "remoteSecretsNamespace"},
	} {
		args := []string{"template", "horizon", horizonChart, "--namespace", systemNamespace}
		for _, s := range tc.set {
			args = append(args, "--set", s)
		}
		_, err := helm(t, args...)
		if err == nil {
			t.Errorf("helm template --set %q succeeded, want it refused", tc.set)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("helm template --set %q: error does not name %q:\n%v", tc.set, tc.want, err)
		}
	}
}

// TestHelmValuesDocumented checks that every value of the horizon chart has a comment
// in values.yaml and a row in the chart's README table.
func TestHelmValuesDocumented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(horizonChart, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(horizonChart, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := documentedValues(t, data)
	if len(documented) < 10 {
		t.Fatalf("found %d documented values in values.yaml: %q", len(documented), documented)
	}
	for _, v := range documented {
		if !strings.Contains(string(readme), "| `"+v+"` |") {
			t.Errorf("charts/horizon/README.md: no row for value %s", v)
		}
	}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-zA-Z.]+)` \\|").FindAllStringSubmatch(string(readme), -1) {
		if !slices.Contains(documented, m[1]) {
			t.Errorf("charts/horizon/README.md documents %s, which values.yaml does not have", m[1])
		}
	}
}

// documentedValues walks values.yaml line by line and returns the path of every key
// with a "# --" comment above it. A key without one must be a map whose keys are all
// documented; keys under a documented key are part of its value.
func documentedValues(t *testing.T, data []byte) []string {
	t.Helper()
	keyLine := regexp.MustCompile(`^( *)([A-Za-z][A-Za-z0-9]*):(.*)$`)
	type frame struct {
		indent     int
		name       string
		documented bool
	}
	var (
		stack      []frame
		docComment bool
		out        []string
		parents    = map[string]bool{} // undocumented keys, which must have children
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "# --"):
			docComment = true
			continue
		case strings.HasPrefix(trimmed, "#"), trimmed == "":
			if trimmed == "" {
				docComment = false
			}
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			continue // a list item or a value's continuation
		}
		indent := len(m[1])
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].documented {
			docComment = false
			continue // inside a documented value
		}
		var path []string
		for _, f := range stack {
			path = append(path, f.name)
		}
		path = append(path, m[2])
		p := strings.Join(path, ".")
		delete(parents, strings.Join(path[:len(path)-1], "."))
		if docComment {
			out = append(out, p)
		} else {
			if strings.TrimSpace(m[3]) != "" {
				t.Errorf("charts/horizon/values.yaml: value %s has no \"# --\" comment", p)
			} else {
				parents[p] = true
			}
		}
		stack = append(stack, frame{indent: indent, name: m[2], documented: docComment})
		docComment = false
	}
	for p := range parents {
		t.Errorf("charts/horizon/values.yaml: value %s has no \"# --\" comment", p)
	}
	return out
}

// everyOptionValues turns on every option of the horizon chart: TLS from values with
// client verification, remote Secrets in a namespace of their own, meshNetworks and
// mesh config, more replicas, a PodDisruptionBudget and other ports.
func everyOptionValues(t *testing.T) map[string]any {
	t.Helper()
	ca := tlstest.NewCA(t, "xds")
	clientCA := tlstest.NewCA(t, "proxies")
	cert, key := ca.Issue(t, "horizon.istio-system.svc", false)
	meshNetworks, err := yamlToMap(meshNetworksExample(t))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]any{
		"clusterID":    "east-1",
		"replicaCount": 2,
		"image":        map[string]any{"repository": "registry.example.com/mesh/horizon", "digest": "sha256:" + strings.Repeat("ab", 32)},
		"logLevel":     "debug",
		"domainSuffix": "corp.local",
		"trustDomain":  "corp.example",
		"mcs":          true,
		"extraArgs":    []string{"--remote-cluster-timeout", "45s"},
		"xds": map[string]any{
			"port": 15012,
			"tls":  map[string]any{"cert": string(cert), "key": string(key), "clientCA": string(clientCA.PEM)},
		},
		"monitoringPort":         9090,
		"meshNetworks":           meshNetworks,
		"meshConfig":             map[string]any{"discoverySelectors": []any{map[string]any{"matchLabels": map[string]any{"mesh": "on"}}}},
		"remoteSecretsNamespace": "horizon-remotes",
		"podDisruptionBudget":    map[string]any{"enabled": true},
		"podAnnotations":         map[string]any{"prometheus.io/port": "9090"},
		"networkPolicy": map[string]any{
			"xdsFrom": []any{map[string]any{"namespaceSelector": map[string]any{}}, map[string]any{"ipBlock": map[string]any{"cidr": "203.0.113.0/24"}}},
		},
	}
}

// meshNetworksExample is the meshNetworks of examples/mesh-networks.yaml.
func meshNetworksExample(t *testing.T) []byte {
	t.Helper()
	var cm corev1.ConfigMap
	exampleObjects(t, "mesh-networks.yaml").get(t, "ConfigMap/"+systemNamespace+"/"+meshsource.ConfigMapName, &cm)
	return []byte(cm.Data[meshsource.ConfigMapKey])
}

func yamlToMap(data []byte) (map[string]any, error) {
	var m map[string]any
	err := yaml.Unmarshal(data, &m)
	return m, err
}

// TestHelmChartMatchesExamples renders both charts with their default values and
// compares what they share with examples/horizon.yaml and remote-reader.yaml —
// Horizon's arguments, security contexts, probes, resources, ports, RBAC rules, the
// Service and the NetworkPolicy — so that neither drifts from the other.
func TestHelmChartMatchesExamples(t *testing.T) {
	chart := parseRendered(t, renderChart(t, horizonChart, "horizon", nil))
	ex := exampleObjects(t, "horizon.yaml")
	key := func(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

	var got, want appsv1.Deployment
	chart.get(t, key("Deployment", systemNamespace, "horizon"), &got)
	ex.get(t, key("Deployment", systemNamespace, "horizon"), &want)
	gc, wc := got.Spec.Template.Spec.Containers, want.Spec.Template.Spec.Containers
	if len(gc) != 1 || len(wc) != 1 {
		t.Fatalf("containers: chart %d, example %d; want one each", len(gc), len(wc))
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"args", gc[0].Args, wc[0].Args},
		{"container securityContext", gc[0].SecurityContext, wc[0].SecurityContext},
		{"pod securityContext", got.Spec.Template.Spec.SecurityContext, want.Spec.Template.Spec.SecurityContext},
		{"readinessProbe", gc[0].ReadinessProbe, wc[0].ReadinessProbe},
		{"livenessProbe", gc[0].LivenessProbe, wc[0].LivenessProbe},
		{"resources", gc[0].Resources, wc[0].Resources},
		{"ports", gc[0].Ports, wc[0].Ports},
		{"imagePullPolicy", gc[0].ImagePullPolicy, wc[0].ImagePullPolicy},
		{"replicas", got.Spec.Replicas, want.Spec.Replicas},
		{"serviceAccountName", got.Spec.Template.Spec.ServiceAccountName, want.Spec.Template.Spec.ServiceAccountName},
	} {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Errorf("Deployment %s: chart %s, examples/horizon.yaml %s", f.name, toJSON(f.got), toJSON(f.want))
		}
	}

	for _, k := range []string{
		key("ClusterRole", "", "horizon"), key("ClusterRole", "", "horizon-debug"), key("Role", systemNamespace, "horizon"),
	} {
		var g, w rbacv1.ClusterRole // a Role has the same rules field
		chart.get(t, k, &g)
		ex.get(t, k, &w)
		if !reflect.DeepEqual(g.Rules, w.Rules) {
			t.Errorf("%s rules: chart %s, examples/horizon.yaml %s", k, toJSON(g.Rules), toJSON(w.Rules))
		}
	}
	for _, k := range []string{key("ClusterRoleBinding", "", "horizon"), key("RoleBinding", systemNamespace, "horizon")} {
		var g, w rbacv1.ClusterRoleBinding
		chart.get(t, k, &g)
		ex.get(t, k, &w)
		if !reflect.DeepEqual(g.Subjects, w.Subjects) || g.RoleRef != w.RoleRef {
			t.Errorf("%s: chart binds %s to %s, examples/horizon.yaml %s to %s", k, toJSON(g.RoleRef), toJSON(g.Subjects), toJSON(w.RoleRef), toJSON(w.Subjects))
		}
	}
	var gs, ws corev1.Service
	chart.get(t, key("Service", systemNamespace, "horizon"), &gs)
	ex.get(t, key("Service", systemNamespace, "horizon"), &ws)
	if !reflect.DeepEqual(gs.Spec.Ports, ws.Spec.Ports) {
		t.Errorf("Service ports: chart %s, examples/horizon.yaml %s", toJSON(gs.Spec.Ports), toJSON(ws.Spec.Ports))
	}
	var gn, wn networkingv1.NetworkPolicy
	chart.get(t, key("NetworkPolicy", systemNamespace, "horizon"), &gn)
	ex.get(t, key("NetworkPolicy", systemNamespace, "horizon"), &wn)
	if !reflect.DeepEqual(gn.Spec.Ingress, wn.Spec.Ingress) || !reflect.DeepEqual(gn.Spec.PolicyTypes, wn.Spec.PolicyTypes) {
		t.Errorf("NetworkPolicy: chart %s, examples/horizon.yaml %s", toJSON(gn.Spec), toJSON(wn.Spec))
	}
	// The chart's objects, by kind and name, are the example's (the Namespace aside:
	// helm install --create-namespace makes it).
	var exKeys []string
	for _, k := range ex.keys() {
		if !strings.HasPrefix(k, "Namespace/") {
			exKeys = append(exKeys, k)
		}
	}
	if got := chart.keys(); !slices.Equal(got, exKeys) {
		t.Errorf("the chart renders %q, examples/horizon.yaml holds %q", got, exKeys)
	}

	reader := parseRendered(t, renderChart(t, readerChart, "horizon-reader", nil))
	exReader := exampleObjects(t, "remote-reader.yaml")
	var rKeys []string
	for _, k := range exReader.keys() {
		if !strings.HasPrefix(k, "Namespace/") {
			rKeys = append(rKeys, k)
		}
	}
	if got := reader.keys(); !slices.Equal(got, rKeys) {
		t.Errorf("the reader chart renders %q, examples/remote-reader.yaml holds %q", got, rKeys)
	}
	var gr, wr rbacv1.ClusterRole
	reader.get(t, key("ClusterRole", "", "horizon-reader"), &gr)
	exReader.get(t, key("ClusterRole", "", "horizon-reader"), &wr)
	if !reflect.DeepEqual(gr.Rules, wr.Rules) {
		t.Errorf("ClusterRole horizon-reader: chart %s, examples/remote-reader.yaml %s", toJSON(gr.Rules), toJSON(wr.Rules))
	}
	var gb, wb rbacv1.ClusterRoleBinding
	k := key("ClusterRoleBinding", "", "horizon-reader-"+systemNamespace)
	reader.get(t, k, &gb)
	exReader.get(t, k, &wb)
	if !reflect.DeepEqual(gb.Subjects, wb.Subjects) || gb.RoleRef != wb.RoleRef {
		t.Errorf("%s: chart %s %s, examples/remote-reader.yaml %s %s", k, toJSON(gb.RoleRef), toJSON(gb.Subjects), toJSON(wb.RoleRef), toJSON(wb.Subjects))
	}
	var gt, wt corev1.Secret
	k = key("Secret", systemNamespace, readerSA+"-token")
	reader.get(t, k, &gt)
	exReader.get(t, k, &wt)
	if gt.Type != wt.Type || !reflect.DeepEqual(gt.Annotations, wt.Annotations) {
		t.Errorf("%s: chart %s %v, examples/remote-reader.yaml %s %v", k, gt.Type, gt.Annotations, wt.Type, wt.Annotations)
	}
}

func toJSON(v any) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSpace(string(data))
}

// checkChartArgs parses the rendered container's arguments as `horizon serve` does and
// validates them, with the chart's TLS Secret (if any) written where the pod mounts it.
func checkChartArgs(t *testing.T, r rendered, dep *appsv1.Deployment) *app.Options {
	t.Helper()
	args := slices.Clone(dep.Spec.Template.Spec.Containers[0].Args)
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("Deployment args %q, want serve first", args)
	}
	dir := t.TempDir()
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		var s corev1.Secret
		r.get(t, "Secret/"+systemNamespace+"/"+v.Secret.SecretName, &s)
		for k, data := range s.Data {
			if err := os.WriteFile(filepath.Join(dir, k), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range args {
		args[i] = strings.Replace(args[i], chartTLSMount, dir, 1)
	}
	// --log-level is the command's, not app.Options'.
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	opts := app.NewOptions()
	opts.AddFlags(fs)
	fs.String("log-level", "info", "")
	if err := fs.Parse(args[1:]); err != nil {
		t.Fatalf("Deployment args %q: %v", args, err)
	}
	if err := opts.Validate(); err != nil {
		t.Fatalf("Deployment args %q: %v", args, err)
	}
	return &opts
}

// TestHelmChartApply applies the rendered charts to real API servers — the horizon
// chart to the config cluster with its default values and with every option, the
// reader chart to the remote cluster — and checks, as the service accounts, what they
// may do.
func TestHelmChartApply(t *testing.T) {
	read := []string{"get", "list", "watch"}
	endpointSources := []groupResource{
		{"", "services"}, {"", "pods"}, {"", "nodes"}, {"", "namespaces"}, {"discovery.k8s.io", "endpointslices"},
	}
	clusterWide := append(slices.Clone(endpointSources), groupResource{"networking.istio.io", "gateways"})
	reviews := []grant{
		{groupResource{"authentication.k8s.io", "tokenreviews"}, []string{"create"}},
		{groupResource{"authorization.k8s.io", "subjectaccessreviews"}, []string{"create"}},
		serviceExports,
	}

	t.Run("defaults", func(t *testing.T) {
		data := renderChart(t, horizonChart, "horizon", nil)
		applyExample(t, config, "gateway-crd.yaml")
		if err := kubetest.EnsureNamespace(t.Context(), config.Client, systemNamespace, nil); err != nil {
			t.Fatal(err)
		}
		applyManifest(t, config, "charts/horizon (default values)", data)
		r := parseRendered(t, data)
		dep, err := config.Client.AppsV1().Deployments(systemNamespace).Get(t.Context(), "horizon", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		opts := checkChartArgs(t, r, dep)
		if got := opts.XDSListenAddress(); got != ":15010" {
			t.Errorf("xDS listens on %q, want :15010", got)
		}
		checkHorizonNetworkPolicy(t, dep.Spec.Template.Spec)

		as := impersonate(t, config, systemNamespace, "horizon")
		inSystem := append(slices.Clone(clusterWide), groupResource{"", "secrets"}, groupResource{"", "configmaps"})
		for _, gr := range clusterWide {
			as.mustListAndWatch(t, gr, "")
			as.mustBeForbidden(t, "create", gr, "default")
		}
		for _, gr := range []groupResource{{"", "secrets"}, {"", "configmaps"}} {
			as.mustListAndWatch(t, gr, systemNamespace)
			as.mustBeForbidden(t, "list", gr, "")
			as.mustBeForbidden(t, "list", gr, "default")
			as.mustBeForbidden(t, "create", gr, systemNamespace)
		}
		as.mustHaveExactly(t, systemNamespace, inSystem, read, reviews...)
		as.mustHaveExactly(t, "default", clusterWide, read, reviews...)
	})

	t.Run("every option", func(t *testing.T) {
		ctx := t.Context()
		for _, ns := range []string{systemNamespace, "horizon-remotes"} {
			if err := kubetest.EnsureNamespace(ctx, config.Client, ns, nil); err != nil {
				t.Fatal(err)
			}
		}
		applyExample(t, config, "gateway-crd.yaml")
		data := renderChart(t, horizonChart, "mesh", everyOptionValues(t))
		applyManifest(t, config, "charts/horizon (every option)", data)
		r := parseRendered(t, data)
		dep, err := config.Client.AppsV1().Deployments(systemNamespace).Get(ctx, "mesh-horizon", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		opts := checkChartArgs(t, r, dep)
		for _, c := range []struct{ what, got, want string }{
			{"--cluster-id", string(opts.Secrets.ClusterID), "east-1"},
			{"--namespace", opts.Secrets.Namespace, systemNamespace},
			{"--remote-secrets-namespace", opts.Secrets.SecretsNamespace, "horizon-remotes"},
			{"xDS address", opts.XDSListenAddress(), ":15012"},
			{"--http-address", opts.HTTPAddress, ":9090"},
			{"--domain-suffix", opts.Registry.DomainSuffix, "corp.local"},
			{"--trust-domain", opts.TrustDomain, "corp.example"},
			{"--mcs", fmt.Sprint(opts.Registry.MCS), "true"},
			{"--remote-cluster-timeout", opts.Registry.SyncTimeout.String(), "45s"},
			{"--xds-client-ca set", fmt.Sprint(opts.TLS.ClientCAFile != ""), "true"},
			{"--xds-allow-plaintext-remote", fmt.Sprint(opts.XDSAllowPlaintextRemote), "false"},
		} {
			if c.got != c.want {
				t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
			}
		}
		c := dep.Spec.Template.Spec.Containers[0]
		if *dep.Spec.Replicas != 2 || c.Image != "registry.example.com/mesh/horizon@sha256:"+strings.Repeat("ab", 32) {
			t.Errorf("Deployment: %d replicas of %s, want 2 of the image by digest", *dep.Spec.Replicas, c.Image)
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Port.IntValue() != 9090 {
			t.Errorf("readiness probe %+v, want it on 9090", c.ReadinessProbe)
		}
		if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != chartTLSMount || !c.VolumeMounts[0].ReadOnly {
			t.Errorf("volume mounts %+v, want the TLS Secret read-only at %s", c.VolumeMounts, chartTLSMount)
		}

		// ConfigMap istio holds what Horizon accepts.
		cm, err := config.Client.CoreV1().ConfigMaps(systemNamespace).Get(ctx, meshsource.ConfigMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mn, err := network.ParseMeshNetworks([]byte(cm.Data[meshsource.ConfigMapKey]))
		if err != nil {
			t.Fatalf("ConfigMap istio meshNetworks: %v", err)
		}
		nets, err := network.Compile(mn)
		if err != nil {
			t.Fatal(err)
		}
		if got := nets.EndpointNetwork("", "cluster2", "10.0.0.1"); got != "network2" {
			t.Errorf("meshNetworks from the chart put cluster2 on %q, want network2", got)
		}
		if _, err := network.ParseMeshConfig([]byte(cm.Data[meshsource.MeshConfigKey])); err != nil {
			t.Errorf("ConfigMap istio mesh: %v", err)
		}
		if _, err := config.Client.PolicyV1().PodDisruptionBudgets(systemNamespace).Get(ctx, "mesh-horizon", metav1.GetOptions{}); err != nil {
			t.Errorf("PodDisruptionBudget: %v", err)
		}

		// Remote Secrets in a namespace of their own: no Secret access in the system
		// namespace.
		as := impersonate(t, config, systemNamespace, "mesh-horizon")
		as.mustListAndWatch(t, groupResource{"", "secrets"}, "horizon-remotes")
		as.mustListAndWatch(t, groupResource{"", "configmaps"}, systemNamespace)
		as.mustBeForbidden(t, "list", groupResource{"", "secrets"}, systemNamespace)
		as.mustBeForbidden(t, "list", groupResource{"", "configmaps"}, "horizon-remotes")
		as.mustHaveExactly(t, systemNamespace, append(slices.Clone(clusterWide), groupResource{"", "configmaps"}), read, reviews...)
		as.mustHaveExactly(t, "horizon-remotes", append(slices.Clone(clusterWide), groupResource{"", "secrets"}), read, reviews...)
	})

	t.Run("reader in the remote cluster", func(t *testing.T) {
		if err := kubetest.EnsureNamespace(t.Context(), remote.Client, systemNamespace, nil); err != nil {
			t.Fatal(err)
		}
		applyManifest(t, remote, "charts/horizon-reader", renderChart(t, readerChart, "horizon-reader", nil))
		as := impersonate(t, remote, systemNamespace, readerSA)
		for _, gr := range endpointSources {
			as.mustListAndWatch(t, gr, "")
			as.mustBeForbidden(t, "create", gr, systemNamespace)
		}
		for _, gr := range []groupResource{{"", "secrets"}, {"", "configmaps"}} {
			for _, ns := range []string{systemNamespace, "default", ""} {
				as.mustBeForbidden(t, "list", gr, ns)
			}
		}
		as.mustHaveExactly(t, systemNamespace, endpointSources, read, serviceExports)
		as.mustHaveExactly(t, "default", endpointSources, read, serviceExports)
		checkCreateRemoteSecretKeeps(t)
	})
}

// buildHorizon builds the horizon command into a directory of the test.
func buildHorizon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "horizon")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/horizon")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build horizon: %v\n%s", err, out)
	}
	return bin
}

// checkCreateRemoteSecretKeeps runs `horizon create-remote-secret` against the remote
// cluster, where the reader is in place, and wants it to create and change nothing.
func checkCreateRemoteSecretKeeps(t *testing.T) {
	t.Helper()
	bin := buildHorizon(t)
	kc, err := remote.Kubeconfig(remote.Config.BearerToken)
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(t.TempDir(), "remote.kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	before := readerObjects(t, remote)
	cmd := exec.CommandContext(t.Context(), bin, "create-remote-secret", "--kubeconfig", kcPath, "--name", "cluster2", "--token-wait", "0s")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("create-remote-secret: %v\n%s", err, out)
	}
	after := readerObjects(t, remote)
	for k, v := range after {
		if before[k] != v {
			t.Errorf("create-remote-secret changed or created %s: charts/horizon-reader does not hold what it creates", k)
		}
	}
}

// installSection returns the "Install on your clusters" section of README.md.
func installSection(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	start := strings.Index(s, "\n## Install on your clusters\n")
	if start < 0 {
		t.Fatal(`README.md has no section "Install on your clusters"`)
	}
	s = s[start+1:]
	if end := strings.Index(s, "\n## "); end >= 0 {
		s = s[:end]
	}
	return s
}

// shellWords splits a command line at spaces and drops double quotes; the README's
// commands need no more.
func shellWords(line string) []string {
	return strings.Fields(strings.ReplaceAll(line, `"`, ""))
}

// TestReadmeInstall checks the commands of README.md's "Install on your clusters":
// the make targets exist, each helm install renders with the values it gives (its
// meshNetworks accepted by Horizon), the --set values the prose offers render, and
// every flag given to horizon is one the command has.
func TestReadmeInstall(t *testing.T) {
	section := installSection(t)
	var sh, yamls []string
	for _, m := range regexp.MustCompile("(?s)```(sh|yaml)\n(.*?)```").FindAllStringSubmatch(section, -1) {
		if m[1] == "sh" {
			sh = append(sh, m[2])
		} else {
			yamls = append(yamls, m[2])
		}
	}
	if len(sh) < 3 || len(yamls) != 1 {
		t.Fatalf("the section has %d sh and %d yaml blocks, want at least 3 and one (horizon-values.yaml)", len(sh), len(yamls))
	}
	valuesPath := filepath.Join(t.TempDir(), "horizon-values.yaml")
	if err := os.WriteFile(valuesPath, []byte(yamls[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	horizon := buildHorizon(t)
	fakeDigest := "sha256:" + strings.Repeat("0f", 32)

	var helmInstalls, horizonCommands int
	for _, block := range sh {
		for _, line := range strings.Split(strings.ReplaceAll(block, "\\\n", " "), "\n") {
			words := shellWords(line)
			for i, w := range words {
				if w == "make" || strings.HasSuffix(w, "$(make") {
					for _, target := range words[i+1:] {
						target = strings.TrimSuffix(target, ")")
						if strings.HasPrefix(target, "-") {
							continue
						}
						if !regexp.MustCompile("(?m)^" + regexp.QuoteMeta(target) + ":").Match(makefile) {
							t.Errorf("README runs make %s, which the Makefile does not have", target)
						}
						break
					}
				}
			}
			if len(words) >= 2 && words[0] == "helm" && words[1] == "install" {
				helmInstalls++
				checkReadmeHelmInstall(t, words, valuesPath, fakeDigest)
			}
			if len(words) >= 2 && words[0] == "bin/horizon" {
				horizonCommands++
				out, _ := exec.CommandContext(t.Context(), horizon, words[1], "--help").CombinedOutput()
				for _, w := range words[2:] {
					if w == "|" {
						break
					}
					if f, _, _ := strings.Cut(w, "="); strings.HasPrefix(f, "--") && !strings.Contains(string(out), "  "+f+" ") {
						t.Errorf("README: horizon %s %s: no such flag\n%s", words[1], f, out)
					}
				}
			}
		}
	}
	if helmInstalls != 2 || horizonCommands < 2 {
		t.Errorf("the section runs helm install %d times and horizon %d times, want 2 and at least 2", helmInstalls, horizonCommands)
	}

	// The values the prose offers render together.
	args := []string{"template", "horizon", horizonChart, "--namespace", systemNamespace}
	sets := regexp.MustCompile("--set ([A-Za-z.]+=[^ `]+)").FindAllStringSubmatch(section, -1)
	for _, m := range sets {
		if !strings.Contains(m[1], "$") {
			args = append(args, "--set", m[1])
		}
	}
	if _, err := helm(t, args...); err != nil {
		t.Errorf("the --set values of README's install section: %v", err)
	}
	// The flags the prose names are horizon's.
	for _, m := range regexp.MustCompile("`--(secret-namespace|server)[\\s=`]").FindAllStringSubmatch(section, -1) {
		out, _ := exec.CommandContext(t.Context(), horizon, "create-remote-secret", "--help").CombinedOutput()
		if !strings.Contains(string(out), "--"+m[1]+" ") {
			t.Errorf("README names create-remote-secret --%s, which it does not have", m[1])
		}
	}
}

// checkReadmeHelmInstall renders what `helm install` in README would install:
// helm template with the same chart, namespace and values.
func checkReadmeHelmInstall(t *testing.T, words []string, valuesPath, digest string) {
	t.Helper()
	args := []string{"template"}
	var chart string
	for i := 2; i < len(words); i++ {
		switch w := words[i]; {
		case w == "--kube-context":
			i++
		case w == "--create-namespace":
		case w == "-n":
			args = append(args, "--namespace")
		case w == "--values":
			args = append(args, w, valuesPath)
			i++
		case strings.HasPrefix(w, "charts/"):
			chart = w
			args = append(args, "../"+w)
		default:
			args = append(args, strings.ReplaceAll(w, "$DIGEST", digest))
		}
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("README's helm install: %v", err)
	}
	if chart != "charts/horizon" {
		return
	}
	r := parseRendered(t, out)
	var cm corev1.ConfigMap
	r.get(t, "ConfigMap/"+systemNamespace+"/"+meshsource.ConfigMapName, &cm)
	mn, err := network.ParseMeshNetworks([]byte(cm.Data[meshsource.ConfigMapKey]))
	if err != nil {
		t.Fatalf("README's meshNetworks: %v", err)
	}
	if _, err := network.Compile(mn); err != nil {
		t.Fatalf("README's meshNetworks: %v", err)
	}
	var dep appsv1.Deployment
	r.get(t, "Deployment/"+systemNamespace+"/horizon", &dep)
	if c := dep.Spec.Template.Spec.Containers[0]; !strings.HasSuffix(c.Image, "@"+digest) {
		t.Errorf("README's helm install runs image %s, want it by digest", c.Image)
	}
	checkChartArgs(t, r, &dep)
}

// TestHelmChartsExportStatus: the charts' opt-in export-status values render the
// rule of examples/mcs-export-status-rbac.yaml (patch on serviceexports/status,
// nothing else) bound to Horizon's and the reader's service accounts, and nothing
// of it by default.
func TestHelmChartsExportStatus(t *testing.T) {
	var want rbacv1.ClusterRole
	exampleObjects(t, "mcs-export-status-rbac.yaml").get(t, "ClusterRole//horizon-export-status", &want)
	for _, tc := range []struct {
		chart, role, binding, sa string
		on                       map[string]any
	}{
		{horizonChart, "horizon-mcs-export-status", "horizon-mcs-export-status", "horizon", map[string]any{"rbac": map[string]any{"mcsExportStatus": true}}},
		{readerChart, "horizon-reader-mcs-export-status", "horizon-reader-mcs-export-status-" + systemNamespace, readerSA, map[string]any{"mcsExportStatus": true}},
	} {
		if r := parseRendered(t, renderChart(t, tc.chart, "horizon", nil)); r["ClusterRole//"+tc.role] != nil {
			t.Errorf("%s renders ClusterRole %s by default; it is opt-in", tc.chart, tc.role)
		}
		r := parseRendered(t, renderChart(t, tc.chart, "horizon", tc.on))
		var role rbacv1.ClusterRole
		r.get(t, "ClusterRole//"+tc.role, &role)
		if !reflect.DeepEqual(role.Rules, want.Rules) {
			t.Errorf("%s: ClusterRole %s rules %s, want those of examples/mcs-export-status-rbac.yaml %s", tc.chart, tc.role, toJSON(role.Rules), toJSON(want.Rules))
		}
		var b rbacv1.ClusterRoleBinding
		r.get(t, "ClusterRoleBinding//"+tc.binding, &b)
		if b.RoleRef.Name != tc.role || len(b.Subjects) != 1 || b.Subjects[0].Name != tc.sa || b.Subjects[0].Namespace != systemNamespace {
			t.Errorf("%s: ClusterRoleBinding %s = %s, want %s bound to %s/%s", tc.chart, tc.binding, toJSON(b), tc.role, systemNamespace, tc.sa)
		}
	}
}
