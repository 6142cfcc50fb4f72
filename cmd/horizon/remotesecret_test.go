package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// adminKubeconfig writes a kubeconfig file that is cluster c's administrator.
func adminKubeconfig(t *testing.T, c *kubetest.Cluster) string {
	t.Helper()
	kc, err := c.Kubeconfig(c.Config.BearerToken)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// remoteSecretOutput is what one run of create-remote-secret printed.
type remoteSecretOutput struct {
	secret *corev1.Secret
	// cluster is the secret's only data key; kubeconfig is its value.
	cluster    string
	kubeconfig *clientcmdapi.Config
	stderr     string
}

// runCreateRemoteSecret runs `horizon create-remote-secret args...` and parses stdout,
// which must hold nothing but the Secret.
func runCreateRemoteSecret(t *testing.T, args ...string) remoteSecretOutput {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), append([]string{"create-remote-secret"}, args...), &stdout, &stderr); err != nil {
		t.Fatalf("create-remote-secret: %v\nstderr:\n%s", err, stderr.String())
	}
	var s corev1.Secret
	if err := yaml.UnmarshalStrict(stdout.Bytes(), &s); err != nil {
		t.Fatalf("stdout is not a Secret manifest: %v\n%s", err, stdout.String())
	}
	if s.APIVersion != "v1" || s.Kind != "Secret" {
		t.Fatalf("manifest is %s %s, want v1 Secret", s.APIVersion, s.Kind)
	}
	if len(s.StringData)+len(s.Data) != 1 {
		t.Fatalf("Secret has keys %v %v, want exactly one", s.StringData, s.Data)
	}
	out := remoteSecretOutput{secret: &s, stderr: stderr.String()}
	var raw []byte
	for k, v := range s.StringData {
		out.cluster, raw = k, []byte(v)
	}
	for k, v := range s.Data {
		out.cluster, raw = k, v
	}
	kc, err := clientcmd.Load(raw)
	if err != nil {
		t.Fatalf("key %q does not hold a kubeconfig: %v", out.cluster, err)
	}
	out.kubeconfig = kc
	if tok := out.token(t); tok == "" || strings.Contains(out.stderr, tok) {
		t.Fatalf("token empty or printed on stderr")
	}
	return out
}

// only returns the kubeconfig's only cluster, user and context, failing unless all
// three are named like the cluster.
func (o remoteSecretOutput) only(t *testing.T) (*clientcmdapi.Cluster, *clientcmdapi.AuthInfo) {
	t.Helper()
	kc := o.kubeconfig
	if len(kc.Clusters) != 1 || len(kc.AuthInfos) != 1 || len(kc.Contexts) != 1 || kc.CurrentContext != o.cluster {
		t.Fatalf("kubeconfig has %d clusters, %d users, %d contexts, current %q; want one each named %q",
			len(kc.Clusters), len(kc.AuthInfos), len(kc.Contexts), kc.CurrentContext, o.cluster)
	}
	c, u, ctx := kc.Clusters[o.cluster], kc.AuthInfos[o.cluster], kc.Contexts[o.cluster]
	if c == nil || u == nil || ctx == nil || ctx.Cluster != o.cluster || ctx.AuthInfo != o.cluster {
		t.Fatalf("kubeconfig entries are not all named %q", o.cluster)
	}
	return c, u
}

func (o remoteSecretOutput) token(t *testing.T) string {
	t.Helper()
	_, u := o.only(t)
	return u.Token
}

func (o remoteSecretOutput) server(t *testing.T) string {
	t.Helper()
	c, _ := o.only(t)
	return c.Server
}

// client builds a clientset from the printed kubeconfig.
func (o remoteSecretOutput) client(t *testing.T) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.NewDefaultClientConfig(*o.kubeconfig, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// whoAmI returns the user name the cluster sees for cs.
func whoAmI(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.UserInfo.Username
}

// TestCreateRemoteSecretEndToEnd is the operator's path: generate a remote Secret from
// an administrator's kubeconfig for cluster3, apply it to the config cluster, and
// Horizon serves cluster3's endpoints with the read-only identity it holds.
func TestCreateRemoteSecretEndToEnd(t *testing.T) {
	ctx := t.Context()
	out := runCreateRemoteSecret(t, "--kubeconfig", adminKubeconfig(t, cluster3), "--name", "cluster3", "--token-wait", "300ms")

	s := out.secret
	if s.Name != "istio-remote-secret-cluster3" || s.Namespace != "istio-system" {
		t.Errorf("Secret is %s/%s, want istio-system/istio-remote-secret-cluster3", s.Namespace, s.Name)
	}
	if s.Labels[network.LabelMultiCluster] != "true" {
		t.Errorf("labels = %v, want %s: \"true\"", s.Labels, network.LabelMultiCluster)
	}
	if s.Annotations[network.AnnotationCluster] != "cluster3" {
		t.Errorf("annotations = %v, want %s: cluster3", s.Annotations, network.AnnotationCluster)
	}
	if out.cluster != "cluster3" {
		t.Errorf("data key = %q, want cluster3", out.cluster)
	}
	c, _ := out.only(t)
	if c.Server != cluster3.Host || !bytes.Equal(c.CertificateAuthorityData, cluster3.CAData) {
		t.Errorf("kubeconfig cluster = %s with %d bytes of CA, want %s with cluster3's CA", c.Server, len(c.CertificateAuthorityData), cluster3.Host)
	}
	// No token controller runs here, so the token comes from the TokenRequest API; the
	// address is loopback. Both are said on stderr.
	for _, want := range []string{"time-limited token", "loopback", "--server"} {
		if !strings.Contains(out.stderr, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, out.stderr)
		}
	}

	// The kubeconfig is the reader service account's, and it can only read.
	if out.token(t) == cluster3.Config.BearerToken {
		t.Fatal("the Secret holds the administrator's token")
	}
	reader := out.client(t)
	if got, want := whoAmI(t, reader), "system:serviceaccount:istio-system:"+defaultReaderServiceAccount; got != want {
		t.Errorf("kubeconfig authenticates as %q, want %q", got, want)
	}
	if _, err := reader.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("reader cannot list pods: %v", err)
	}
	if _, err := reader.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("reader cannot list EndpointSlices: %v", err)
	}
	_, err := reader.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "remote-secret-e2e-forbidden"}}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("reader creating a namespace: err = %v, want forbidden", err)
	}
	if _, err := reader.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("reader listing Secrets: err = %v, want forbidden", err)
	}

	// Apply it to the config cluster, as `kubectl apply -f -` would.
	if err := kubetest.EnsureNamespace(ctx, cluster1.Client, "istio-system", nil); err != nil {
		t.Fatal(err)
	}
	secrets := cluster1.Client.CoreV1().Secrets("istio-system")
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = secrets.Delete(context.Background(), s.Name, metav1.DeleteOptions{}) })

	const ns = "remote-secret-e2e"
	err = kubetest.Deploy(ctx, cluster3.Client, kubetest.Service{
		Namespace: ns, Name: "web",
		Ports:    []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}},
		Backends: []kubetest.Backend{{Pod: "web-0", IP: "10.3.42.1", Ready: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	xdsAddr, _, _ := startServe(t)
	const cla = "outbound|8080||web." + ns + ".svc.cluster.local"
	p := xdstest.Connect(t, xdsAddr, xdstest.Node("sidecar~10.1.0.77~sleep."+ns+"~"+ns+".svc.cluster.local", ""), xdstest.Options{EDS: []string{cla}})
	kubetest.Eventually(t, 15*time.Second, func() error {
		got := strings.Join(xdstest.Summary(p.CLA(cla)), "\n")
		if !strings.Contains(got, "10.3.42.1:8080*") {
			return fmt.Errorf("%s = %q, want cluster3's endpoint 10.3.42.1:8080", cla, got)
		}
		return nil
	})
}

// TestCreateRemoteSecretDefaultName names the cluster after the UID of its kube-system
// namespace when --name is not given.
func TestCreateRemoteSecretDefaultName(t *testing.T) {
	if err := kubetest.EnsureNamespace(t.Context(), cluster2.Client, metav1.NamespaceSystem, nil); err != nil {
		t.Fatal(err)
	}
	ks, err := cluster2.Client.CoreV1().Namespaces().Get(t.Context(), metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uid := string(ks.UID)
	out := runCreateRemoteSecret(t, "--kubeconfig", adminKubeconfig(t, cluster2), "--namespace", "remote-secret-default-name", "--token-wait", "0s")
	if out.cluster != uid {
		t.Errorf("data key = %q, want kube-system's UID %q", out.cluster, uid)
	}
	if got := out.secret.Annotations[network.AnnotationCluster]; got != uid {
		t.Errorf("cluster annotation = %q, want %q", got, uid)
	}
	if want := "istio-remote-secret-" + uid; out.secret.Name != want {
		t.Errorf("Secret name = %q, want %q", out.secret.Name, want)
	}
	if out.secret.Namespace != "remote-secret-default-name" {
		t.Errorf("Secret namespace = %q, want the --namespace", out.secret.Namespace)
	}
}

// TestCreateRemoteSecretServiceAccount checks a named service account: used as it is
// when it exists, an error (and nothing created) when it does not.
func TestCreateRemoteSecretServiceAccount(t *testing.T) {
	ctx := t.Context()
	const ns = "remote-secret-sa"
	if err := kubetest.EnsureNamespace(ctx, cluster2.Client, ns, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster2.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "own-reader"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	kubeconfig := adminKubeconfig(t, cluster2)

	t.Run("missing", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		err := run(ctx, []string{"create-remote-secret", "--kubeconfig", kubeconfig, "--name", "c2", "--namespace", ns, "--service-account", "nobody", "--token-wait", "0s"}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "service account "+ns+"/nobody does not exist") {
			t.Fatalf("err = %v, want the missing service account named", err)
		}
		if errors.As(err, new(usageError)) {
			t.Errorf("err = %v is a usage error; the command line was fine", err)
		}
		if stdout.Len() != 0 {
			t.Errorf("stdout = %q, want nothing", stdout.String())
		}
		if _, err := cluster2.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "nobody", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("get service account nobody: err = %v, want not found", err)
		}
	})

	t.Run("existing", func(t *testing.T) {
		out := runCreateRemoteSecret(t, "--kubeconfig", kubeconfig, "--name", "c2", "--namespace", ns, "--service-account", "own-reader", "--token-wait", "0s")
		if got, want := whoAmI(t, out.client(t)), "system:serviceaccount:"+ns+":own-reader"; got != want {
			t.Errorf("kubeconfig authenticates as %q, want %q", got, want)
		}
		// Someone else's account is granted nothing.
		if _, err := cluster2.Client.RbacV1().ClusterRoleBindings().Get(ctx, readerRole+"-"+ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("get cluster role binding: err = %v, want not found", err)
		}
	})
}

// TestCreateRemoteSecretServer checks the server written into the kubeconfig and the
// warning about addresses another cluster cannot reach.
func TestCreateRemoteSecretServer(t *testing.T) {
	kubeconfig := adminKubeconfig(t, cluster2)
	tests := []struct {
		name        string
		args        []string
		wantServer  string
		wantWarning bool
		wantSecret  string
	}{
		{name: "remote kubeconfig's server", wantServer: cluster2.Host, wantWarning: true, wantSecret: "istio-remote-secret-c2"},
		{name: "override", args: []string{"--server", "https://cluster2.example.com:6443"}, wantServer: "https://cluster2.example.com:6443", wantSecret: "istio-remote-secret-c2"},
		{name: "loopback override", args: []string{"--server", "https://localhost:6443"}, wantServer: "https://localhost:6443", wantWarning: true, wantSecret: "istio-remote-secret-c2"},
		{name: "IPv6 loopback override", args: []string{"--server", "https://[::1]:6443"}, wantServer: "https://[::1]:6443", wantWarning: true, wantSecret: "istio-remote-secret-c2"},
		{name: "secret name", args: []string{"--server", "https://10.0.0.1:6443", "--secret-name", "c2-secret"}, wantServer: "https://10.0.0.1:6443", wantSecret: "c2-secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--kubeconfig", kubeconfig, "--name", "c2", "--namespace", "remote-secret-server", "--token-wait", "0s"}, tt.args...)
			out := runCreateRemoteSecret(t, args...)
			if got := out.server(t); got != tt.wantServer {
				t.Errorf("server = %q, want %q", got, tt.wantServer)
			}
			if got := strings.Contains(out.stderr, "loopback"); got != tt.wantWarning {
				t.Errorf("loopback warning = %v, want %v; stderr:\n%s", got, tt.wantWarning, out.stderr)
			}
			if out.secret.Name != tt.wantSecret {
				t.Errorf("Secret name = %q, want %q", out.secret.Name, tt.wantSecret)
			}
		})
	}
}

// TestCreateRemoteSecretIsIdempotent runs the command twice; the second run repairs a
// reader role that was widened in between and adds nothing twice.
func TestCreateRemoteSecretIsIdempotent(t *testing.T) {
	ctx := t.Context()
	const ns = "remote-secret-again"
	kubeconfig := adminKubeconfig(t, cluster2)
	args := []string{"--kubeconfig", kubeconfig, "--name", "c2", "--namespace", ns, "--token-wait", "0s"}
	first := runCreateRemoteSecret(t, args...)

	roles := cluster2.Client.RbacV1().ClusterRoles()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r, err := roles.Get(ctx, readerRole, metav1.GetOptions{})
		if err != nil {
			return err
		}
		r.Rules = append(r.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"*"}})
		_, err = roles.Update(ctx, r, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	second := runCreateRemoteSecret(t, args...)
	r, err := roles.Get(ctx, readerRole, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(r.Rules, readerRules()) {
		t.Errorf("reader role rules = %+v, want them reset to %+v", r.Rules, readerRules())
	}
	b, err := cluster2.Client.RbacV1().ClusterRoleBindings().Get(ctx, readerRole+"-"+ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: defaultReaderServiceAccount}}; !equality.Semantic.DeepEqual(b.Subjects, want) {
		t.Errorf("binding subjects = %+v, want %+v", b.Subjects, want)
	}
	for _, out := range []remoteSecretOutput{first, second} {
		if got, want := whoAmI(t, out.client(t)), "system:serviceaccount:"+ns+":"+defaultReaderServiceAccount; got != want {
			t.Errorf("kubeconfig authenticates as %q, want %q", got, want)
		}
	}
}

// TestCreateRemoteSecretWaitsForTokenSecret plays the token controller: it fills in
// the token Secret while the command waits, and the command uses that long-lived token
// and CA rather than a time-limited one.
func TestCreateRemoteSecretWaitsForTokenSecret(t *testing.T) {
	const ns = "remote-secret-filled"
	kubeconfig := adminKubeconfig(t, cluster2)
	data := map[string][]byte{
		corev1.ServiceAccountTokenKey:  []byte("long-lived-token-from-the-token-controller"),
		corev1.ServiceAccountRootCAKey: cluster2.CAData,
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	filled := make(chan error, 1)
	go func() {
		filled <- fillTokenSecret(ctx, cluster2.Client, ns, defaultReaderServiceAccount+"-token", data)
	}()

	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"create-remote-secret", "--kubeconfig", kubeconfig, "--name", "c2", "--namespace", ns,
		"--server", "https://cluster2.example.com", "--token-wait", "20s"}, &stdout, &stderr)
	if err != nil {
		cancel()
		<-filled
		t.Fatalf("create-remote-secret: %v\nstderr:\n%s", err, stderr.String())
	}
	if err := <-filled; err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := yaml.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.Load([]byte(s.StringData["c2"]))
	if err != nil {
		t.Fatal(err)
	}
	if got := kc.AuthInfos["c2"].Token; got != string(data[corev1.ServiceAccountTokenKey]) {
		t.Errorf("kubeconfig does not use the token Secret's token")
	}
	if got := kc.Clusters["c2"].CertificateAuthorityData; !bytes.Equal(got, cluster2.CAData) {
		t.Errorf("kubeconfig CA = %q, want the token Secret's ca.crt", got)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr = %q, want no warning", stderr.String())
	}
}

// fillTokenSecret waits for Secret ns/name to exist and fills in data, as the token
// controller of a full cluster does.
func fillTokenSecret(ctx context.Context, cs kubernetes.Interface, ns, name string, data map[string][]byte) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	secrets := cs.CoreV1().Secrets(ns)
	for {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			s, err := secrets.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			s.Data = data
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
			return err
		})
		if !apierrors.IsNotFound(err) {
			if err != nil {
				return fmt.Errorf("fill in token Secret %s/%s: %w", ns, name, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("token Secret %s/%s never created: %w", ns, name, ctx.Err())
		case <-tick.C:
		}
	}
}

func TestCreateRemoteSecretBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no remote cluster", nil, "--kubeconfig or --context is required"},
		{"unknown flag", []string{"--no-such-flag"}, "unknown flag: --no-such-flag"},
		{"stray argument", []string{"--kubeconfig=k", "extra"}, "unexpected arguments"},
		{"empty namespace", []string{"--kubeconfig=k", "--namespace="}, "--namespace"},
		{"bad name", []string{"--kubeconfig=k", "--name=a/b"}, "--name"},
		{"bad service account", []string{"--kubeconfig=k", "--service-account=Not_Valid"}, "--service-account"},
		{"bad secret name", []string{"--kubeconfig=k", "--secret-name=Not_Valid"}, "--secret-name"},
		{"server without scheme", []string{"--kubeconfig=k", "--server=cluster.example.com:6443"}, "--server"},
		{"bad duration", []string{"--kubeconfig=k", "--token-wait=soon"}, `invalid argument "soon"`},
		{"negative token wait", []string{"--kubeconfig=k", "--token-wait=-1s"}, "--token-wait: must not be negative"},
		{"short token TTL", []string{"--kubeconfig=k", "--token-ttl=1m"}, "--token-ttl: must be at least 10m0s"},
		{"short token duration", []string{"--kubeconfig=k", "--token-duration=5m"}, "--token-duration 5m0s: must be 0 (token Secret) or between 10m0s"},
		{"negative token duration", []string{"--kubeconfig=k", "--token-duration=-1h"}, "--token-duration -1h0m0s: must be 0"},
		{"token duration past the API's maximum", []string{"--kubeconfig=k", "--token-duration=1200000h"}, "--token-duration 1200000h0m0s: must be 0"},
		{"token duration and TTL", []string{"--kubeconfig=k", "--token-duration=1h", "--token-ttl=2h"}, "--token-duration and --token-ttl: give one"},
		{"missing kubeconfig file", []string{"--kubeconfig=/nonexistent/kubeconfig"}, "load --kubeconfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), append([]string{"create-remote-secret"}, tt.args...), &stdout, &stderr)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v (%T), want a usage error (exit 2)", err, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %q, want it to contain %q", err, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
}

func TestCreateRemoteSecretHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "horizon create-remote-secret") {
		t.Errorf("help = %q", out.String())
	}
	out.Reset()
	if err := run(t.Context(), []string{"create-remote-secret", "--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--kubeconfig", "--context", "--name", "--namespace", "--service-account", "--server", "--secret-name", "--token-wait", "--token-ttl", "--token-duration"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("create-remote-secret --help does not mention %s", flag)
		}
	}
}

func TestConfigCA(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, []byte("file CA"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.crt")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tls     rest.TLSClientConfig
		want    string
		wantErr string
	}{
		{name: "inline data", tls: rest.TLSClientConfig{CAData: []byte("inline CA"), CAFile: caFile}, want: "inline CA"},
		{name: "file", tls: rest.TLSClientConfig{CAFile: caFile}, want: "file CA"},
		{name: "missing file", tls: rest.TLSClientConfig{CAFile: filepath.Join(dir, "missing")}, wantErr: "read the remote kubeconfig's certificate authority"},
		{name: "empty file", tls: rest.TLSClientConfig{CAFile: empty}, wantErr: "is empty"},
		{name: "none", tls: rest.TLSClientConfig{Insecure: true}, wantErr: "no CA bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := configCA(&rest.Config{TLSClientConfig: tt.tls})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("configCA = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestIsLoopbackServer(t *testing.T) {
	tests := []struct {
		server string
		want   bool
	}{
		{"https://127.0.0.1:6443", true},
		{"https://127.1.2.3", true},
		{"https://localhost:6443", true},
		{"https://LOCALHOST", true},
		{"https://api.localhost:6443", true},
		{"https://[::1]:6443", true},
		{"https://0.0.0.0:6443", true},
		{"https://10.0.0.1:6443", false},
		{"https://api.example.com", false},
		{"https://[2001:db8::1]:6443", false},
	}
	for _, tt := range tests {
		t.Run(tt.server, func(t *testing.T) {
			if got := isLoopbackServer(tt.server); got != tt.want {
				t.Errorf("isLoopbackServer(%q) = %v, want %v", tt.server, got, tt.want)
			}
		})
	}
}

// TestCreateRemoteSecretSecretNamespace: --secret-namespace puts the printed Secret
// in the namespace Horizon reads remote Secrets from (--remote-secrets-namespace),
// while the reader service account stays in --namespace of the remote cluster.
func TestCreateRemoteSecretSecretNamespace(t *testing.T) {
	const ns = "remote-secret-secns"
	out := runCreateRemoteSecret(t, "--kubeconfig", adminKubeconfig(t, cluster2), "--name", "c-secns", "--namespace", ns,
		"--secret-namespace", "horizon-remotes", "--token-wait", "0s")
	if out.secret.Namespace != "horizon-remotes" {
		t.Errorf("Secret namespace = %q, want --secret-namespace", out.secret.Namespace)
	}
	if got, want := whoAmI(t, out.client(t)), "system:serviceaccount:"+ns+":"+defaultReaderServiceAccount; got != want {
		t.Errorf("kubeconfig authenticates as %q, want %q", got, want)
	}
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"create-remote-secret", "--kubeconfig=k", "--secret-namespace=Not_Valid"}, &stdout, &stderr)
	if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), `--secret-namespace "Not_Valid"`) {
		t.Errorf("bad --secret-namespace: err = %v, want a usage error naming the flag", err)
	}
}
