package kubetest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// TestClustersAreIndependent starts two clusters on one etcd and checks that they
// do not see each other's objects and that a minted kubeconfig is a real, read-only,
// revocable credential.
func TestClustersAreIndependent(t *testing.T) {
	env, err := kubetest.Start()
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
