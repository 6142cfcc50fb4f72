package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/secrets"
)

// TestBadRemoteSecrets applies one bad remote secret after another beside a good one.
// Each gets its own clear outcome, and the good cluster serves throughout. No token
// appears in any log line or status.
func TestBadRemoteSecrets(t *testing.T) {
	ctx := t.Context()
	h := startHorizon(t, 3*time.Second)

	goodHost := deployWeb(t, remote, "bad-secrets-good", "10.30.0.1")
	good, goodTok, err := remote.MintKubeconfig(ctx, "kube-system", "bad-secrets-good")
	if err != nil {
		t.Fatal(err)
	}
	applySecret(t, remoteSecret("good", map[string][]byte{"good": good}))
	h.waitEndpoints(t, goodHost, 80, "good", "10.30.0.1")
	h.waitSynced(t, "good")

	revoked, revokedTok, err := third.MintKubeconfig(ctx, "kube-system", "bad-secrets-revoked")
	if err != nil {
		t.Fatal(err)
	}
	if err := third.RevokeServiceAccount(ctx, "kube-system", "bad-secrets-revoked"); err != nil {
		t.Fatal(err)
	}
	otherTok, err := third.MintToken(ctx, "kube-system", "bad-secrets-other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrongCA, err := kubetest.KubeconfigFor("wrong-ca", third.Host, remote.CAData, otherTok.Value)
	if err != nil {
		t.Fatal(err)
	}
	unreachable, err := kubetest.KubeconfigFor("unreachable", "https://127.0.0.1:1", third.CAData, otherTok.Value)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []string{goodTok.Value, revokedTok.Value, otherTok.Value}
	execKC := []byte(`apiVersion: v1
kind: Config
current-context: c
contexts: [{name: c, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: "` + third.Host + `"}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, "touch /tmp/pwned"]}}}]
`)
	tokenFileKC := []byte(strings.Replace(string(execKC),
		`{exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, "touch /tmp/pwned"]}}`,
		`{tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}`, 1))
	withUser := func(user string) []byte {
		return []byte(strings.Replace(string(execKC),
			`{exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, "touch /tmp/pwned"]}}`, user, 1))
	}
	withCluster := func(cluster string) []byte {
		return []byte(strings.Replace(string(withUser(`{token: "`+otherTok.Value+`"}`)),
			`{server: "`+third.Host+`"}`, cluster, 1))
	}
	thirdNoScheme := strings.TrimPrefix(third.Host, "https://")

	// Rejected before any connection is made.
	rejected := []struct {
		name, key string
		data      []byte
		want      string
	}{
		{"garbage", "garbage", []byte("\x00\x01 not yaml: [" + otherTok.Value), "not valid YAML or JSON"},
		{"exec", "exec", execKC, "exec credential plugin, which is not allowed"},
		{"tokenfile", "tokenfile", tokenFileKC, "sets tokenFile, a file path, which is not allowed"},
		{"empty", "empty", nil, "kubeconfig is empty"},
		{"impersonation", "impersonation", withUser(`{token: "` + otherTok.Value + `", as: "system:admin"}`), "users[0].user.as: impersonation is not allowed in a remote kubeconfig"},
		{"basic-auth", "basic-auth", withUser(`{username: admin, password: "` + otherTok.Value + `"}`), "users[0].user.username: basic authentication is not allowed in a remote kubeconfig"},
		{"proxy-url", "proxy-url", withCluster(`{server: "` + third.Host + `", proxy-url: "http://127.0.0.1:3128"}`), "clusters[0].cluster.proxy-url: a proxy is not allowed"},
		{"insecure", "insecure", withCluster(`{server: "` + third.Host + `", insecure-skip-tls-verify: true}`), "clusters[0].cluster.insecure-skip-tls-verify: turning off server certificate checks is not allowed"},
		{"http", "http", withCluster(`{server: "http://` + thirdNoScheme + `"}`), "clusters[0].cluster.server: http:// scheme is not allowed"},
		{"userinfo", "userinfo", withCluster(`{server: "https://admin:` + otherTok.Value + `@` + thirdNoScheme + `"}`), "clusters[0].cluster.server: credentials in the URL (userinfo) are not allowed"},
		{"metadata", "metadata", withCluster(`{server: "https://169.254.169.254"}`), "link-local, multicast or unspecified server address is not allowed"},
	}
	for _, tc := range rejected {
		t.Run("rejected/"+tc.name, func(t *testing.T) {
			applySecret(t, remoteSecret("bad-"+tc.name, map[string][]byte{tc.key: tc.data}))
			kubetest.Eventually(t, 10*time.Second, func() error {
				st, ok := h.keyStatus("bad-"+tc.name, tc.key)
				if !ok || st.State != secrets.KeyRejected {
					return fmt.Errorf("status %+v", st)
				}
				want := fmt.Sprintf("secret %s/bad-%s key %q: ", systemNamespace, tc.name, tc.key)
				if !strings.HasPrefix(st.Error, want) || !strings.Contains(st.Error, tc.want) {
					return fmt.Errorf("error %q, want %q…%q", st.Error, want, tc.want)
				}
				return nil
			})
			if _, ok := h.cluster(network.ClusterID(tc.key)); ok {
				t.Fatalf("rejected kubeconfig registered cluster %s", tc.key)
			}
			h.waitEndpoints(t, goodHost, 80, "good", "10.30.0.1")
		})
	}

	// Accepted (the kubeconfig is well formed) but the cluster cannot be synced: the
	// cluster's status says why, and readiness stops waiting after the timeout.
	unsynced := []struct {
		name string
		data []byte
		want string
	}{
		{"unreachable", unreachable, "connection refused"},
		{"wrong-ca", wrongCA, "certificate signed by unknown authority"},
		{"revoked", revoked, "Unauthorized"},
	}
	for _, tc := range unsynced {
		t.Run("unsynced/"+tc.name, func(t *testing.T) {
			applySecret(t, remoteSecret("bad-"+tc.name, map[string][]byte{tc.name: tc.data}))
			kubetest.Eventually(t, 15*time.Second, func() error {
				c, ok := h.cluster(network.ClusterID(tc.name))
				if !ok {
					return fmt.Errorf("cluster %s not registered", tc.name)
				}
				if c.State != clusterregistry.StateError && c.State != clusterregistry.StateTimedOut {
					return fmt.Errorf("state %s", c.State)
				}
				if !strings.Contains(c.LastError, tc.want) {
					return fmt.Errorf("last error %q, want %q", c.LastError, tc.want)
				}
				return nil
			})
			kubetest.Eventually(t, 10*time.Second, func() error {
				if c, _ := h.cluster(network.ClusterID(tc.name)); c.State != clusterregistry.StateTimedOut {
					return fmt.Errorf("state %s, want timed out", c.State)
				}
				if !h.registry.HasSynced() {
					return fmt.Errorf("registry waits for a timed-out cluster")
				}
				return nil
			})
			h.waitEndpoints(t, goodHost, 80, "good", "10.30.0.1")
		})
	}

	t.Run("duplicate cluster ID", func(t *testing.T) {
		applySecret(t, remoteSecret("zz-duplicate", map[string][]byte{"good": revoked}))
		kubetest.Eventually(t, 10*time.Second, func() error {
			st, _ := h.keyStatus("zz-duplicate", "good")
			if st.State != secrets.KeyDuplicate || !strings.Contains(st.Error, "already claimed by secret istio-system/good") {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
		if c, _ := h.cluster("good"); c.Source != systemNamespace+"/good[good]" || c.State != clusterregistry.StateSynced {
			t.Fatalf("first claim lost: %+v", c)
		}
		h.waitEndpoints(t, goodHost, 80, "good", "10.30.0.1")
	})

	t.Run("config cluster's own ID", func(t *testing.T) {
		applySecret(t, remoteSecret("self", map[string][]byte{"config": good}))
		kubetest.Eventually(t, 10*time.Second, func() error {
			if st, _ := h.keyStatus("self", "config"); st.State != secrets.KeyIgnored {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
		if _, ok := h.cluster("config"); ok {
			t.Fatal("config cluster registered as a remote")
		}
	})

	// Neither of these is a remote secret. A labelled marker secret written after them
	// shows the controller has seen everything before it.
	t.Run("not remote secrets", func(t *testing.T) {
		if err := kubetest.EnsureNamespace(ctx, config.Client, "elsewhere", nil); err != nil {
			t.Fatal(err)
		}
		other := remoteSecret("other-namespace", map[string][]byte{"elsewhere": good})
		other.Namespace = "elsewhere"
		if _, err := config.Client.CoreV1().Secrets("elsewhere").Create(ctx, other, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = config.Client.CoreV1().Secrets("elsewhere").Delete(context.Background(), other.Name, metav1.DeleteOptions{})
		})
		unlabelled := remoteSecret("unlabelled", map[string][]byte{"unlabelled": good})
		unlabelled.Labels = nil
		applySecret(t, unlabelled)
		falseLabel := remoteSecret("label-false", map[string][]byte{"label-false": good})
		falseLabel.Labels[network.LabelMultiCluster] = "false"
		applySecret(t, falseLabel)
		applySecret(t, remoteSecret("zzz-marker", map[string][]byte{"marker": []byte("x")}))
		kubetest.Eventually(t, 10*time.Second, func() error {
			if _, ok := h.keyStatus("zzz-marker", "marker"); !ok {
				return fmt.Errorf("marker not seen")
			}
			return nil
		})
		for _, id := range []network.ClusterID{"elsewhere", "unlabelled", "label-false"} {
			if _, ok := h.cluster(id); ok {
				t.Errorf("cluster %s registered from a Secret that is not a remote secret", id)
			}
		}
		for _, st := range h.secrets.Status() {
			if st.Secret != systemNamespace+"/zzz-marker" && strings.Contains("elsewhere unlabelled label-false", st.Key) {
				t.Errorf("status for a non-remote secret: %+v", st)
			}
		}
		// Removing the label makes a remote secret stop being one.
		applySecret(t, remoteSecret("unlabel-me", map[string][]byte{"unlabel-me": unreachable}))
		kubetest.Eventually(t, 10*time.Second, func() error {
			if _, ok := h.cluster("unlabel-me"); !ok {
				return fmt.Errorf("cluster not registered")
			}
			return nil
		})
		s, err := config.Client.CoreV1().Secrets(systemNamespace).Get(ctx, "unlabel-me", metav1.GetOptions{})
		if err == nil {
			s.Labels = nil
			_, err = config.Client.CoreV1().Secrets(systemNamespace).Update(ctx, s, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
		kubetest.Eventually(t, 10*time.Second, func() error {
			if _, ok := h.cluster("unlabel-me"); ok {
				return fmt.Errorf("cluster still registered after its Secret lost the label")
			}
			return nil
		})
	})

	// The good cluster still follows changes after all of the above.
	deploy(t, remote, kubetest.Service{
		Namespace: "bad-secrets-good", Name: "web",
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: "10.30.0.1", Ready: true}, {Pod: "web-2", IP: "10.30.0.2", Ready: true}},
	})
	h.waitEndpoints(t, goodHost, 80, "good", "10.30.0.1", "10.30.0.2")

	logs := h.logs.String()
	for _, tok := range tokens {
		if strings.Contains(logs, tok) {
			t.Error("a token appears in the logs")
		}
		for _, st := range h.secrets.Status() {
			if strings.Contains(st.Error, tok) {
				t.Errorf("a token appears in the status of %s[%s]", st.Secret, st.Key)
			}
		}
		for _, c := range h.registry.Clusters() {
			if strings.Contains(fmt.Sprintf("%+v", c), tok) {
				t.Errorf("a token appears in the status of cluster %s", c.ID)
			}
		}
	}
}

// TestBadEditKeepsCluster breaks a working remote secret, then releases a claimed
// cluster ID: the cluster keeps serving on its last good credentials, and a Secret
// refused as a duplicate takes over once the first claim is gone.
func TestBadEditKeepsCluster(t *testing.T) {
	ctx := t.Context()
	h := startHorizon(t, 3*time.Second)
	host := deployWeb(t, remote, "bad-edit", "10.31.0.1")
	kc, _, err := remote.MintKubeconfig(ctx, "kube-system", "bad-edit")
	if err != nil {
		t.Fatal(err)
	}
	applySecret(t, remoteSecret("edit", map[string][]byte{"edited": kc}))
	h.waitEndpoints(t, host, 80, "edited", "10.31.0.1")

	applySecret(t, remoteSecret("edit", map[string][]byte{"edited": []byte("garbage")}))
	kubetest.Eventually(t, 10*time.Second, func() error {
		st, _ := h.keyStatus("edit", "edited")
		if st.State != secrets.KeyRejected || !strings.Contains(st.Error, "keeps its previous credentials") {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	h.waitEndpoints(t, host, 80, "edited", "10.31.0.1")

	// A second Secret claiming the same ID waits behind the first.
	applySecret(t, remoteSecret("edit-second", map[string][]byte{"edited": kc}))
	kubetest.Eventually(t, 10*time.Second, func() error {
		if st, _ := h.keyStatus("edit-second", "edited"); st.State != secrets.KeyDuplicate {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	deleteSecret(t, "edit")
	kubetest.Eventually(t, 10*time.Second, func() error {
		st, _ := h.keyStatus("edit-second", "edited")
		c, ok := h.cluster("edited")
		if st.State != secrets.KeyAccepted || !ok || c.Source != systemNamespace+"/edit-second[edited]" {
			return fmt.Errorf("second claim not taken over: status %+v, cluster %+v", st, c)
		}
		return nil
	})
	h.waitEndpoints(t, host, 80, "edited", "10.31.0.1")
}
