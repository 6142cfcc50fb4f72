// Package e2e holds Horizon's end-to-end tests: real API servers (cmd/localmesh, through
// kubetest), Horizon as `horizon serve` assembles it (cmd/horizon/app) or the parts a
// test looks at, and users' actions — labelled remote Secrets, Services, Pods,
// EndpointSlices — applied through the Kubernetes API. Its sub-packages are helpers
// that only tests import: kubetest (clusters, polling, TestMain), xdstest (an xDS
// proxy) and tlstest (certificates and TLS checks).
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/localmesh/dataplane"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/secrets"
)

const systemNamespace = "istio-system"

// Three real clusters shared by the tests; each test uses its own namespaces, secret
// names and cluster IDs.
var config, remote, third *kubetest.Cluster

func TestMain(m *testing.M) {
	if dataplane.InNetns() {
		// Re-executed by TestSeedFlow, alone, in a network namespace of its own: the
		// pod and gateway addresses are on its loopback, and both clusters run the
		// EndpointSlice controller, as real clusters do.
		if err := dataplane.SetupNetns(seedAddrs...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		kubetest.MainWith(m, kubetest.ClusterOptions{ControllerManager: true}, func(_ *kubetest.Environment, cs []*kubetest.Cluster) {
			config, remote = cs[0], cs[1]
		}, "config", "remote")
		return
	}
	kubetest.Main(m, func(_ *kubetest.Environment, cs []*kubetest.Cluster) {
		config, remote, third = cs[0], cs[1], cs[2]
	}, "config", "remote", "third")
}

// horizon is Horizon's remote-secret controller and registry, running against the
// config cluster as `horizon serve` runs them.
type horizon struct {
	registry *clusterregistry.Registry
	secrets  *secrets.Controller
	logs     *kubetest.LogBuffer
}

// startHorizon runs the controller and registry until the test ends. The config
// cluster itself is not added: these tests look at remote clusters only.
func startHorizon(t *testing.T, timeout time.Duration) *horizon {
	t.Helper()
	logs := &kubetest.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg, err := clusterregistry.New(clusterregistry.Options{
		DomainSuffix: "cluster.local", Namespace: systemNamespace, SyncTimeout: timeout, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := secrets.New(secrets.Options{
		Client: config.Client, Handler: reg, Namespace: systemNamespace, ClusterID: "config", Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctrl.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		reg.Close()
		if t.Failed() {
			t.Logf("horizon logs:\n%s", logs.String())
		}
	})
	kubetest.Eventually(t, 10*time.Second, func() error {
		if !ctrl.HasSynced() {
			return fmt.Errorf("secret controller not synced")
		}
		return nil
	})
	return &horizon{registry: reg, secrets: ctrl, logs: logs}
}

// keyStatus returns the status of one Secret key, or false.
func (h *horizon) keyStatus(secret, key string) (secrets.KeyStatus, bool) {
	for _, s := range h.secrets.Status() {
		if s.Secret == systemNamespace+"/"+secret && s.Key == key {
			return s, true
		}
	}
	return secrets.KeyStatus{}, false
}

func (h *horizon) cluster(id network.ClusterID) (clusterregistry.ClusterStatus, bool) {
	for _, c := range h.registry.Clusters() {
		if c.ID == id {
			return c, true
		}
	}
	return clusterregistry.ClusterStatus{}, false
}

// remoteSecret is a Secret as `horizon create-remote-secret` (or a user with kubectl)
// writes it.
func remoteSecret(name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: systemNamespace,
			Labels: map[string]string{network.LabelMultiCluster: "true"},
		},
		Data: data,
	}
}

func applySecret(t *testing.T, s *corev1.Secret) {
	t.Helper()
	ctx := t.Context()
	if err := kubetest.EnsureNamespace(ctx, config.Client, s.Namespace, nil); err != nil {
		t.Fatal(err)
	}
	secrets := config.Client.CoreV1().Secrets(s.Namespace)
	if cur, err := secrets.Get(ctx, s.Name, metav1.GetOptions{}); err == nil {
		s.ResourceVersion = cur.ResourceVersion
		if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Other tests share the config cluster.
		err := config.Client.CoreV1().Secrets(s.Namespace).Delete(context.Background(), s.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete secret %s: %v", s.Name, err)
		}
	})
}

// waitSynced waits until cluster id is registered and synced.
func (h *horizon) waitSynced(t *testing.T, id network.ClusterID) {
	t.Helper()
	kubetest.Eventually(t, 15*time.Second, func() error {
		if c, ok := h.cluster(id); !ok || c.State != clusterregistry.StateSynced {
			return fmt.Errorf("cluster %s not synced: %+v", id, c)
		}
		return nil
	})
}

func deleteSecret(t *testing.T, name string) {
	t.Helper()
	if err := config.Client.CoreV1().Secrets(systemNamespace).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// deployWeb deploys service "web" with one ready pod at ip into namespace ns of c.
func deployWeb(t *testing.T, c *kubetest.Cluster, ns, ip string) string {
	t.Helper()
	err := kubetest.Deploy(t.Context(), c.Client, kubetest.Service{
		Namespace: ns, Name: "web",
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: ip, Ready: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return "web." + ns + ".svc.cluster.local"
}

// waitEndpoints waits until cluster id serves exactly the addresses want for host:port.
func (h *horizon) waitEndpoints(t *testing.T, host string, port int32, id network.ClusterID, want ...string) {
	t.Helper()
	kubetest.Eventually(t, 15*time.Second, func() error {
		var got []string
		for _, ep := range h.registry.Endpoints(host, port)[id] {
			got = append(got, ep.Address)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("%s:%d in %s = %v, want %v", host, port, id, got, want)
		}
		return nil
	})
}
