package localmesh_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/horizon-mesh/horizon/cmd/localmesh"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// TestClustersAreIndependent starts two clusters on one etcd and checks that they
// do not see each other's objects and that a minted kubeconfig is a real, read-only,
// revocable credential.
func TestClustersAreIndependent(t *testing.T) {
	t.Parallel()
	env, err := localmesh.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	ctx := t.Context()
	c1, err := env.StartCluster(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := env.StartCluster(ctx, "two")
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-one"}}
	if _, err := c1.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Client.CoreV1().Namespaces().Get(ctx, "only-in-one", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("cluster two sees cluster one's namespace: err=%v", err)
	}

	kubeconfig, tok, err := c2.MintKubeconfig(ctx, "kube-system", "reader")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Value == "" || strings.Contains(string(kubeconfig), "horizon-test-admin-token") {
		t.Fatal("minted kubeconfig does not carry its own token")
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("minted token cannot list pods: %v", err)
	}
	_, err = reader.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("minted token can write: err=%v", err)
	}
	// The token is cluster two's: cluster one rejects it.
	cfg1 := *cfg
	cfg1.Host, cfg1.TLSClientConfig.CAData = c1.Host, c1.CAData
	other, _ := kubernetes.NewForConfig(&cfg1)
	if _, err := other.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("cluster one accepted cluster two's token: err=%v", err)
	}
	if err := c2.RevokeServiceAccount(ctx, "kube-system", "reader"); err != nil {
		t.Fatal(err)
	}
	// The API server checks the service account through its informer cache, so
	// revocation takes effect within moments, not instantly.
	kubetest.Eventually(t, 10*time.Second, func() error {
		if _, err := reader.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
			return fmt.Errorf("revoked token still works: err=%v", err)
		}
		return nil
	})
}

// TestRestartKeepsAddressCredentialsAndData stops a cluster and starts it again: the
// same Host, CA, admin client and minted tokens work, and its objects are still there.
func TestRestartKeepsAddressCredentialsAndData(t *testing.T) {
	t.Parallel()
	env, err := localmesh.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	ctx := t.Context()
	c, err := env.StartCluster(ctx, "restart")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("restart of a running cluster: err = %v, want still running", err)
	}
	if err := localmesh.EnsureNamespace(ctx, c.Client, "kept", map[string]string{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	kubeconfig, _, err := c.MintKubeconfig(ctx, "kube-system", "reader")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	host, ca := c.Host, string(c.CAData)

	start := time.Now()
	c.Stop()
	c.Stop() // stopping twice is harmless
	c.Kill()
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	if _, err := c.Client.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err == nil {
		t.Fatal("stopped cluster still answers")
	}

	// Someone else on the port: Restart says so.
	u, err := url.Parse(c.Host)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Restart(ctx)
	l.Close()
	if err == nil || !strings.Contains(err.Error(), "no longer free") {
		t.Fatalf("restart on a taken port: err = %v", err)
	}

	start = time.Now()
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %s", time.Since(start).Round(time.Millisecond))
	if c.Host != host || string(c.CAData) != ca {
		t.Fatal("restart changed the cluster's address or CA")
	}
	ns, err := c.Client.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{})
	if err != nil || ns.Labels["a"] != "b" {
		t.Fatalf("namespace after restart: %v, err=%v", ns, err)
	}
	if _, err := reader.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("token minted before the restart: %v", err)
	}

	// Killed while a watch is open: the watch breaks at once, and the server comes
	// back as well.
	w, err := c.Client.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	start = time.Now()
	c.Kill()
	for range w.ResultChan() {
	}
	t.Logf("killed in %s", time.Since(start).Round(time.Millisecond))
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace after kill and restart: %v", err)
	}
}

// TestFreezeThawAndStopFrozen freezes an API server with a watch open: a request
// gets no answer (it times out); after Thaw the same client is answered; a frozen
// server still stops; freezing a stopped one says so.
func TestFreezeThawAndStopFrozen(t *testing.T) {
	t.Parallel()
	env, err := localmesh.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	ctx := t.Context()
	c, err := env.StartCluster(ctx, "freeze")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Thaw)
	w, err := c.Client.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := c.Freeze(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = c.Client.CoreV1().Namespaces().Get(short, "default", metav1.GetOptions{})
	cancel()
	if err == nil {
		t.Fatal("a frozen server answered")
	}
	c.Thaw()
	kubetest.Eventually(t, 20*time.Second, func() error {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err
	})

	if err := c.Freeze(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Stop() // SIGTERM reaches a frozen server once it is continued
	t.Logf("stopped a frozen server in %s", time.Since(start).Round(time.Millisecond))
	if err := c.Freeze(); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("freeze of a stopped server: err = %v", err)
	}
	c.Thaw() // harmless
}
