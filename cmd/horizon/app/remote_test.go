package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/secrets"
)

// running is Horizon run by a test until it ends.
type running struct {
	*app.Horizon
	logs *kubetest.LogBuffer
}

// runHorizon runs Horizon with opts against the config cluster through cfg until the
// test ends, and waits for Run to return then.
func runHorizon(t *testing.T, opts app.Options, cfg *rest.Config) *running {
	t.Helper()
	logs := &kubetest.LogBuffer{}
	h, err := app.New(opts, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after its context ended")
		}
		if t.Failed() {
			t.Logf("horizon logs:\n%s", logs.String())
		}
	})
	return &running{Horizon: h, logs: logs}
}

// putSecret writes a remote Secret into the config cluster and deletes it when the
// test ends: the cluster is shared with the other tests.
func putSecret(t *testing.T, ns, name string, data map[string][]byte) {
	t.Helper()
	ctx := t.Context()
	if err := kubetest.EnsureNamespace(ctx, cluster.Client, ns, nil); err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{network.LabelMultiCluster: "true"}},
		Data:       data,
	}
	client := cluster.Client.CoreV1().Secrets(ns)
	if cur, err := client.Get(ctx, name, metav1.GetOptions{}); err == nil {
		s.ResourceVersion = cur.ResourceVersion
		if _, err := client.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := client.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := cluster.Client.CoreV1().Secrets(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete Secret %s/%s: %v", ns, name, err)
		}
	})
}

// staticResolver answers names from a table, as a DNS server an attacker controls.
type staticResolver map[string][]netip.Addr

func (r staticResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func clusterStatus(h *running, id network.ClusterID) (clusterregistry.ClusterStatus, bool) {
	for _, c := range h.Registry().Clusters() {
		if c.ID == id {
			return c, true
		}
	}
	return clusterregistry.ClusterStatus{}, false
}

func keyState(h *running, secret, key string) secrets.KeyState {
	for _, s := range h.Secrets().Status() {
		if s.Secret == secret && s.Key == key {
			return s.State
		}
	}
	return ""
}

func scrape(t *testing.T, h *running) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + h.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestHostileRemoteSecrets runs Horizon with remote Secrets on a real API server:
// a server name resolving to the cloud metadata address is refused at dial time with
// the address class in the cluster's status; a key past --remote-max-clusters waits,
// shows as too-many-clusters in status and metrics, is logged once, and comes up when
// a cluster is removed; refused kubeconfigs count by field.
func TestHostileRemoteSecrets(t *testing.T) {
	ctx := t.Context()
	good, tok, err := cluster.MintKubeconfig(ctx, "hostile-test", "reader")
	if err != nil {
		t.Fatal(err)
	}
	const metadataName = "metadata.remote.test"
	evil := bytes.Replace(good, []byte("https://127.0.0.1:"), []byte("https://"+metadataName+":"), 1)
	if bytes.Equal(evil, good) {
		t.Fatalf("the test cluster is not on 127.0.0.1: %s", cluster.Host)
	}
	exec := bytes.Replace(good, []byte("    token: "), []byte("    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true}\n    token: "), 1)

	const ns = "istio-system"
	putSecret(t, ns, "hostile-a", map[string][]byte{"evil": evil, "good1": good})
	putSecret(t, ns, "hostile-b", map[string][]byte{"good2": good, "good3": good})
	putSecret(t, ns, "hostile-c", map[string][]byte{"exec": exec})

	opts := testOptions()
	opts.Secrets.MaxClusters = 2
	opts.Secrets.Load.Resolver = staticResolver{metadataName: {netip.MustParseAddr("169.254.169.254")}}
	h := runHorizon(t, opts, cluster.Config)

	kubetest.Eventually(t, 20*time.Second, func() error {
		st, ok := clusterStatus(h, "evil")
		if !ok || !strings.Contains(st.LastError, `remote server host "`+metadataName+`" resolves to 169.254.169.254 (link-local)`) {
			return fmt.Errorf("cluster evil: %+v", st)
		}
		if st, ok := clusterStatus(h, "good1"); !ok || st.State != clusterregistry.StateSynced {
			return fmt.Errorf("cluster good1 not synced: %+v", st)
		}
		return nil
	})
	st, _ := clusterStatus(h, "evil")
	t.Logf("status of the cluster behind %s: %s: %s", metadataName, st.State, st.LastError)
	for _, k := range []string{"good2", "good3"} {
		if s := keyState(h, ns+"/hostile-b", k); s != secrets.KeyTooManyClusters {
			t.Errorf("key %s: state %q, want too-many-clusters", k, s)
		}
		if _, ok := clusterStatus(h, network.ClusterID(k)); ok {
			t.Errorf("cluster %s added past --remote-max-clusters", k)
		}
	}
	if s := keyState(h, ns+"/hostile-c", "exec"); s != secrets.KeyRejected {
		t.Errorf("exec key: state %q, want rejected", s)
	}
	metrics := scrape(t, h)
	for _, want := range []string{
		`horizon_remote_secret_keys{outcome="too-many-clusters"} 2`,
		`horizon_remote_secret_keys{outcome="accepted"} 2`,
		`horizon_remote_kubeconfig_refusals_total{field="exec"} 1`,
		`horizon_remote_kubeconfig_refusals_total{field="impersonation"} 0`,
		`horizon_remote_kubeconfig_refusals_total{field="other"} 0`,
		`horizon_gateway_dns_names 0`,
		`horizon_gateway_dns_lookups_total 0`,
		`horizon_gateway_dns_lookup_failures_total 0`,
		`horizon_gateway_dns_names_refused_total 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}

	// The evil key removed: the first waiting key takes its place.
	putSecret(t, ns, "hostile-a", map[string][]byte{"good1": good})
	kubetest.Eventually(t, 20*time.Second, func() error {
		if st, ok := clusterStatus(h, "good2"); !ok || st.State != clusterregistry.StateSynced {
			return fmt.Errorf("cluster good2 not synced: %+v", st)
		}
		if _, ok := clusterStatus(h, "evil"); ok {
			return errors.New("cluster evil not removed")
		}
		return nil
	})
	if s := keyState(h, ns+"/hostile-b", "good3"); s != secrets.KeyTooManyClusters {
		t.Errorf("key good3: state %q, want too-many-clusters", s)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "remote clusters refused: too many clusters"); n != 1 {
		t.Errorf("%d log lines about the cluster cap, want 1", n)
	}
	if strings.Contains(logs, tok.Value) {
		t.Error("logs show the token")
	}
	if strings.Contains(fmt.Sprint(h.Registry().Clusters(), h.Secrets().Status()), tok.Value) {
		t.Error("status shows the token")
	}
}

// dedicatedNamespaceRBAC returns the RBAC of examples/horizon.yaml as its comments
// say to set it up for remote Secrets in a namespace of their own: the secrets rule of
// Role istio-system/horizon dropped, the commented Role and RoleBinding in place, and
// that namespace.
func dedicatedNamespaceRBAC(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("../../../examples/horizon.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubetest.ParseManifests(data)
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	add := func(obj map[string]any) {
		b, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	dropped := false
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "RoleBinding":
		case "Role":
			rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
			var kept []any
			for _, r := range rules {
				if res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources"); slices.Contains(res, "secrets") {
					dropped = true
					continue
				}
				kept = append(kept, r)
			}
			if err := unstructured.SetNestedSlice(o.Object, kept, "rules"); err != nil {
				t.Fatal(err)
			}
		default:
			continue
		}
		add(o.Object)
	}
	if !dropped {
		t.Fatal("horizon.yaml has no Role rule for secrets to drop")
	}
	// The commented alternative: the run of comment lines from its first apiVersion.
	var alt []string
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if line == "# apiVersion: rbac.authorization.k8s.io/v1" {
			in = true
		}
		if !in {
			continue
		}
		if !strings.HasPrefix(line, "#") {
			break
		}
		alt = append(alt, strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "))
	}
	if len(alt) == 0 {
		t.Fatal("horizon.yaml has no commented RBAC for a remote-secret namespace")
	}
	add(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "horizon-remotes"}})
	return []byte(strings.Join(docs, "---\n") + "---\n" + strings.Join(alt, "\n"))
}

// TestRemoteSecretsNamespace runs Horizon as horizon.yaml's service account, with
// the RBAC that file's comments give for remote Secrets in a namespace of their own
// (--remote-secrets-namespace): no Secret access in the system namespace. Horizon
// gets ready and serves the remote cluster of a Secret there, and labelled Secrets in
// the system namespace are not read.
func TestRemoteSecretsNamespace(t *testing.T) {
	ctx := t.Context()
	const (
		remotes = "horizon-remotes"
		system  = "istio-system"
	)
	if err := kubetest.Apply(ctx, cluster.Config, dedicatedNamespaceRBAC(t)); err != nil {
		t.Fatalf("apply horizon.yaml's RBAC: %v", err)
	}
	as := rest.CopyConfig(cluster.Config)
	as.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + system + ":horizon",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + system, "system:authenticated"},
	}
	asClient, err := kubernetes.NewForConfig(as)
	if err != nil {
		t.Fatal(err)
	}
	// No Secret of the system namespace is readable; those of the dedicated one are.
	if _, err := asClient.CoreV1().Secrets(system).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing Secrets in %s as the service account: err = %v, want forbidden", system, err)
	}
	if _, err := asClient.CoreV1().Secrets(remotes).List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("listing Secrets in %s as the service account: %v", remotes, err)
	}

	good, _, err := cluster.MintKubeconfig(ctx, "rbac-test", "reader")
	if err != nil {
		t.Fatal(err)
	}
	putSecret(t, remotes, "dedicated", map[string][]byte{"dedicated": good})
	putSecret(t, system, "in-system", map[string][]byte{"in-system": good})

	opts := testOptions()
	opts.Secrets.SecretsNamespace = remotes
	h := runHorizon(t, opts, as)
	kubetest.Eventually(t, 30*time.Second, func() error {
		if err := h.Ready(); err != nil {
			return err
		}
		if st, ok := clusterStatus(h, "dedicated"); !ok || st.State != clusterregistry.StateSynced {
			return fmt.Errorf("cluster dedicated not synced: %+v", st)
		}
		return nil
	})
	if st := h.Secrets().Status(); len(st) != 1 || st[0].Secret != remotes+"/dedicated" {
		t.Errorf("remote secret status %+v, want only %s/dedicated", st, remotes)
	}
	if _, ok := clusterStatus(h, "in-system"); ok {
		t.Errorf("a Secret of %s was read", system)
	}
	if logs := h.logs.String(); strings.Contains(logs, "forbidden") {
		t.Errorf("Horizon was refused something it reads:\n%s", logs)
	}
}
