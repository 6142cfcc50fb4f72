// Package e2e holds Horizon's end-to-end tests: real API servers (cmd/localmesh, through
// kubetest), Horizon as `horizon serve` assembles it (cmd/horizon/app) or the parts a
// test looks at, and users' actions — labelled remote Secrets, Services, Pods —
// applied through the Kubernetes API. Each cluster runs the EndpointSlice controller,
// which makes the slices; the tests set only what a kubelet would (pod IPs and
// readiness) and write no EndpointSlice. Its sub-packages are helpers
// that only tests import: kubetest (clusters, polling, TestMain), xdstest (an xDS
// proxy) and tlstest (certificates and TLS checks).
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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
	// Every cluster runs the EndpointSlice controller, as real clusters do: tests
	// create Services and Pods and set only what a kubelet would (pod IPs and
	// readiness), and the controller makes the slices (see deploy).
	opts := kubetest.ClusterOptions{ControllerManager: true}
	if dataplane.InNetns() {
		// Re-executed by TestSeedFlow, alone, in a network namespace of its own: the
		// pod and gateway addresses are on its loopback.
		if err := dataplane.SetupNetns(seedAddrs...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		kubetest.MainWith(m, opts, func(_ *kubetest.Environment, cs []*kubetest.Cluster) {
			config, remote = cs[0], cs[1]
		}, "config", "remote")
		return
	}
	kubetest.MainWith(m, opts, func(_ *kubetest.Environment, cs []*kubetest.Cluster) {
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
	return startHorizonWith(t, timeout, nil)
}

// startHorizonWith is startHorizon with the secret controller's options changed by
// configure (when not nil).
func startHorizonWith(t *testing.T, timeout time.Duration, configure func(*secrets.Options)) *horizon {
	t.Helper()
	logs := &kubetest.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg, err := clusterregistry.New(clusterregistry.Options{
		DomainSuffix: "cluster.local", Namespace: systemNamespace, SyncTimeout: timeout, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := secrets.Options{
		Client: config.Client, Handler: reg, Namespace: systemNamespace, ClusterID: "config", Logger: logger,
	}
	if configure != nil {
		configure(&opts)
	}
	ctrl, err := secrets.New(opts)
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
	deploy(t, c, kubetest.Service{
		Namespace: ns, Name: "web",
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		Backends: []kubetest.Backend{{Pod: "web-1", IP: ip, Ready: true}},
	})
	return "web." + ns + ".svc.cluster.local"
}

// testNode is the node that pods of deploy go on when their Backend names none.
const testNode = "e2e-node"

// deploy creates or updates s's Service (selecting app=<name>) and Pods in c, setting
// only what a kubelet would — each pod's IP and readiness — and waits until c's
// EndpointSlice controller lists them in the Service's slices. A Backend without a
// Node goes on testNode, since the controller leaves out unscheduled pods. Pods of
// the Service no longer listed are deleted, as scaling down would; the rest are
// deleted when the test ends, and the controller empties the slices.
func deploy(t *testing.T, c *kubetest.Cluster, s kubetest.Service) {
	t.Helper()
	s.Backends = slices.Clone(s.Backends)
	var want []string
	for i := range s.Backends {
		if s.Backends[i].Node == "" {
			s.Backends[i].Node = testNode
		}
		want = append(want, endpointState(s.Backends[i].IP, s.Backends[i].Ready))
	}
	if err := kubetest.DeployPods(t.Context(), c.Client, s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePods(t, c, s.Namespace, s.Name, "app="+s.Name) })
	waitSlices(t, c, s.Namespace, s.Name, want...)
}

// deletePods deletes the pods matching selector in namespace ns of c, as their
// controller would when scaled to zero, and waits until the EndpointSlice controller
// has taken them out of service svc's slices.
func deletePods(t *testing.T, c *kubetest.Cluster, ns, svc, selector string) {
	t.Helper()
	ctx := context.Background()
	zero := int64(0)
	err := c.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Errorf("delete pods %s in %s: %v", selector, ns, err)
		return
	}
	waitSlices(t, c, ns, svc)
}

func endpointState(ip string, ready bool) string {
	if ready {
		return ip + " ready"
	}
	return ip + " not ready"
}

// waitSlices waits until the EndpointSlices of Service ns/svc in c list exactly the
// endpoints want (endpointState of each), and fails if any of them was not made by the
// EndpointSlice controller: a hand-written slice beside the controller's would be a
// second copy of the endpoints.
func waitSlices(t *testing.T, c *kubetest.Cluster, ns, svc string, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	kubetest.Eventually(t, 15*time.Second, func() error {
		list, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
		})
		if err != nil {
			return err
		}
		var got []string
		for _, sl := range list.Items {
			if by := sl.Labels[discoveryv1.LabelManagedBy]; by != controllerManagedBy {
				t.Fatalf("EndpointSlice %s/%s of Service %s is managed by %q, not the EndpointSlice controller", ns, sl.Name, svc, by)
			}
			for _, ep := range sl.Endpoints {
				for _, a := range ep.Addresses {
					got = append(got, endpointState(a, ep.Conditions.Ready != nil && *ep.Conditions.Ready))
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("EndpointSlices of %s/%s in %s list %q, want %q", ns, svc, c.Name, got, want)
		}
		return nil
	})
}

// controllerManagedBy is the managed-by label of the EndpointSlice controller's slices.
const controllerManagedBy = "endpointslice-controller.k8s.io"

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
