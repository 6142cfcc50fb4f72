package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/cmd/localmesh/dataplane"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// Three real clusters: cluster1 (the config cluster, network1), cluster2 (network2,
// two gateways) and cluster3 (network3, no gateway).
var cluster1, cluster2, cluster3 *kubetest.Cluster

func TestMain(m *testing.M) {
	if dataplane.InNetns() {
		// Re-executed by TestDataPath or TestStatusRemoteDebugAccess in a network
		// namespace of its own.
		if err := dataplane.SetupNetns(append(slices.Clone(dataPathAddrs), debugAddr)...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	kubetest.Main(m, func(_ *kubetest.Environment, cs []*kubetest.Cluster) {
		cluster1, cluster2, cluster3 = cs[0], cs[1], cs[2]
	}, "cluster1", "cluster2", "cluster3")
}

const (
	helloHost = "helloworld.sample.svc.cluster.local"
	helloCLA  = "outbound|5000||" + helloHost
	otherCLA  = "outbound|5000||other.sample.svc.cluster.local"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	addrs, err := kubetest.FreeAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	return addrs[0]
}

// startServe runs `horizon serve` in-process with the given extra flags against
// cluster1, as an operator would start it, and waits for /readyz.
func startServe(t *testing.T, extra ...string) (xdsAddr, httpAddr string, logs *kubetest.LogBuffer) {
	t.Helper()
	return startServeWith(t, serveSetup{}, extra...)
}

// serveSetup is what startServeWith changes from startServe's defaults.
type serveSetup struct {
	// token authenticates Horizon to cluster1; empty: an administrator's.
	token string
	// httpAddress is --http-address; empty: a free loopback address. With host
	// 0.0.0.0, /readyz is polled on 127.0.0.1.
	httpAddress string
}

// startServeWith is startServe as setup says.
func startServeWith(t *testing.T, setup serveSetup, extra ...string) (xdsAddr, httpAddr string, logs *kubetest.LogBuffer) {
	t.Helper()
	dir := t.TempDir()
	token := setup.token
	if token == "" {
		token = cluster1.Config.BearerToken
	}
	kc, err := cluster1.Kubeconfig(token)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	xdsAddr, httpAddr = freeAddr(t), setup.httpAddress
	if httpAddr == "" {
		httpAddr = freeAddr(t)
	}
	readyz := "http://" + strings.Replace(httpAddr, "0.0.0.0:", "127.0.0.1:", 1) + "/readyz"
	args := append([]string{"serve",
		"--kubeconfig", kubeconfig,
		"--cluster-id", "cluster1",
		"--xds-address", xdsAddr,
		"--http-address", httpAddr,
		"--debounce-after", "20ms",
		"--remote-cluster-timeout", "5s",
		"--log-level", "debug",
	}, extra...)
	logs = &kubetest.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, logs, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("horizon serve: %v", err)
		}
		if t.Failed() {
			t.Logf("horizon logs:\n%s", logs.String())
		}
	})
	kubetest.Eventually(t, 20*time.Second, func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("horizon exited: %v", err)
		default:
		}
		resp, err := http.Get(readyz)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	return xdsAddr, httpAddr, logs
}

func writeMeshNetworks(t *testing.T, yaml string) {
	t.Helper()
	ctx := t.Context()
	if err := kubetest.EnsureNamespace(ctx, cluster1.Client, "istio-system", nil); err != nil {
		t.Fatal(err)
	}
	cms := cluster1.Client.CoreV1().ConfigMaps("istio-system")
	cm, err := cms.Get(ctx, "istio", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"},
			Data:       map[string]string{"meshNetworks": yaml},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cms.Delete(context.Background(), "istio", metav1.DeleteOptions{}) })
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{"meshNetworks": yaml}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// writeRemoteSecret mints a reader token kubeconfig for c and writes it to cluster1
// as remote Secret name with key id. It returns the token.
func writeRemoteSecret(t *testing.T, name string, c *kubetest.Cluster, id string) string {
	t.Helper()
	ctx := t.Context()
	kc, tok, err := c.MintKubeconfig(ctx, "kube-system", "horizon-reader")
	if err != nil {
		t.Fatal(err)
	}
	if err := kubetest.EnsureNamespace(ctx, cluster1.Client, "istio-system", nil); err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system",
			Labels:      map[string]string{network.LabelMultiCluster: "true"},
			Annotations: map[string]string{network.AnnotationCluster: id}},
		Data: map[string][]byte{id: kc},
	}
	secrets := cluster1.Client.CoreV1().Secrets("istio-system")
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = secrets.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return tok.Value
}

func helloworld(version string, mtls bool, ips ...string) kubetest.Service {
	s := kubetest.Service{
		Namespace: "sample", Name: "helloworld",
		Ports: []corev1.ServicePort{{Name: "http", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
	}
	for i, ip := range ips {
		labels := map[string]string{"version": version}
		if mtls {
			labels[network.LabelTLSMode] = network.TLSModeIstio
		}
		s.Backends = append(s.Backends, kubetest.Backend{Pod: fmt.Sprintf("helloworld-%s-%d", version, i), IP: ip, Ready: true, Labels: labels})
	}
	return s
}

const meshNetworks = `
networks:
  network1:
    endpoints: [{fromRegistry: cluster1}]
  network2:
    endpoints: [{fromRegistry: cluster2}]
    gateways:
    - {address: 192.0.2.21, port: 15443}
    - {address: 192.0.2.22, port: 15443}
  network3:
    endpoints: [{fromRegistry: cluster3}]
`

// waitCLA waits until proxy p holds helloworld's assignment with the given summary.
func waitCLA(t *testing.T, p *xdstest.Proxy, want ...string) {
	t.Helper()
	kubetest.Eventually(t, 10*time.Second, func() error {
		got := xdstest.Summary(p.CLA(helloCLA))
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	})
}

// TestServeSplitHorizon runs `horizon serve` against three real clusters on three
// networks, configured only through labelled remote Secrets and the meshNetworks
// ConfigMap, and checks what proxies on each network receive, over state-of-the-world
// and delta ADS, as the clusters and the configuration change.
func TestServeSplitHorizon(t *testing.T) {
	ctx := t.Context()
	for _, d := range []struct {
		c *kubetest.Cluster
		s kubetest.Service
	}{
		{cluster1, helloworld("v1", true, "10.1.0.1")},
		{cluster2, helloworld("v2", true, "10.2.0.1", "10.2.0.2")},
		{cluster3, helloworld("v3", false, "10.3.0.1")},
	} {
		if err := kubetest.Deploy(ctx, d.c.Client, d.s); err != nil {
			t.Fatal(err)
		}
	}
	other := helloworld("v1", true, "10.1.0.40")
	other.Name = "other"
	other.Backends[0].Pod = "other-0"
	if err := kubetest.Deploy(ctx, cluster1.Client, other); err != nil {
		t.Fatal(err)
	}
	writeMeshNetworks(t, meshNetworks)
	writeRemoteSecret(t, "istio-remote-secret-cluster2", cluster2, "cluster2")
	writeRemoteSecret(t, "istio-remote-secret-cluster3", cluster3, "cluster3")
	xdsAddr, _, logs := startServe(t)

	net1 := xdstest.Connect(t, xdsAddr, xdstest.Node("sidecar~10.1.0.9~sleep.sample~sample.svc.cluster.local", "network1"), xdstest.Options{CDS: true, EDS: []string{helloCLA}})
	net2 := xdstest.Connect(t, xdsAddr, xdstest.Node("sidecar~10.2.0.9~sleep.sample~sample.svc.cluster.local", "network2"), xdstest.Options{Delta: true, CDS: true, EDS: []string{helloCLA}})
	net3 := xdstest.Connect(t, xdsAddr, xdstest.Node("sidecar~10.3.0.9~sleep.sample~sample.svc.cluster.local", "network3"), xdstest.Options{Delta: true, EDS: []string{helloCLA}})
	net1b := xdstest.Connect(t, xdsAddr, xdstest.Node("sidecar~10.1.0.10~other.sample~sample.svc.cluster.local", "network1"), xdstest.Options{Delta: true, EDS: []string{helloCLA, otherCLA}})

	// network1 and network3 reach network2 only through its two gateways: cluster2's
	// two endpoints are split over them. network3 has no gateway, so its pod is direct
	// for everyone; its pod is not mTLS, which does not matter when sent directly.
	plain := xdstest.Connect(t, xdsAddr, xdstest.Node("sidecar~10.1.0.11~plain.sample~sample.svc.cluster.local", "network1"), xdstest.Options{Plain: true, EDS: []string{helloCLA}})

	remoteView := []string{"//(8): 10.1.0.1:5000*2+mtls 10.3.0.1:5000*2 192.0.2.21:15443*2+mtls 192.0.2.22:15443*2+mtls"}
	waitCLA(t, net1, remoteView...)
	waitCLA(t, net1b, remoteView...)
	waitCLA(t, plain, remoteView...)
	waitCLA(t, net3, remoteView...)
	waitCLA(t, net2, "//(4): 10.1.0.1:5000*1+mtls 10.2.0.1:5000*1+mtls 10.2.0.2:5000*1+mtls 10.3.0.1:5000*1")

	// An Envoy sidecar also asks for listeners: it gets an answer (empty), so it need
	// not wait for its initial fetch timeout.
	envoy := xdstest.Connect(t, xdsAddr, xdstest.Node("sidecar~10.1.0.12~envoy.sample~sample.svc.cluster.local", "network1"), xdstest.Options{LDS: true, CDS: true, EDS: []string{helloCLA}})
	kubetest.Eventually(t, 10*time.Second, func() error {
		if envoy.ResponsesFor(xdstest.TypeListener) == 0 || len(envoy.Names(xdstest.TypeListener)) != 0 {
			return fmt.Errorf("listener responses %d, listeners %v", envoy.ResponsesFor(xdstest.TypeListener), envoy.Names(xdstest.TypeListener))
		}
		return nil
	})

	// Sidecars also get the EDS cluster, with Istio's SNI for the passthrough gateway.
	kubetest.Eventually(t, 10*time.Second, func() error {
		c := net2.Cluster(helloCLA)
		if c == nil {
			return fmt.Errorf("cluster %s not received", helloCLA)
		}
		var tls tlsv3.UpstreamTlsContext
		if err := c.GetTransportSocketMatches()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&tls); err != nil {
			return err
		}
		if tls.GetSni() != "outbound_.5000_._."+helloHost {
			return fmt.Errorf("SNI %q", tls.GetSni())
		}
		return nil
	})

	t.Run("scale the remote EndpointSlice", func(t *testing.T) {
		otherBefore := net1b.Received(xdstest.TypeCLA, otherCLA)
		if otherBefore == 0 {
			t.Fatal("delta proxy never received the other service")
		}
		cdsBefore := net1.Received(xdstest.TypeCluster, helloCLA)
		if cdsBefore == 0 {
			t.Fatal("SotW proxy never received the helloworld cluster")
		}
		if err := kubetest.Deploy(ctx, cluster2.Client, helloworld("v2", true, "10.2.0.1")); err != nil {
			t.Fatal(err)
		}
		waitCLA(t, net1, "//(6): 10.1.0.1:5000*2+mtls 10.3.0.1:5000*2 192.0.2.21:15443*1+mtls 192.0.2.22:15443*1+mtls")
		waitCLA(t, net1b, "//(6): 10.1.0.1:5000*2+mtls 10.3.0.1:5000*2 192.0.2.21:15443*1+mtls 192.0.2.22:15443*1+mtls")
		waitCLA(t, net2, "//(3): 10.1.0.1:5000*1+mtls 10.2.0.1:5000*1+mtls 10.3.0.1:5000*1")
		// Delta sends only what changed: the other service was not sent again.
		if n := net1b.Received(xdstest.TypeCLA, otherCLA); n != otherBefore {
			t.Fatalf("unchanged %s re-sent to a delta proxy (%d → %d times)", otherCLA, otherBefore, n)
		}
		// State of the world: an endpoint change does not re-send the clusters.
		if n := net1.Received(xdstest.TypeCluster, helloCLA); n != cdsBefore {
			t.Fatalf("unchanged CDS re-sent to a SotW proxy after an endpoint change (%d → %d times)", cdsBefore, n)
		}
	})

	t.Run("edit meshNetworks: gateway address and port", func(t *testing.T) {
		writeMeshNetworks(t, strings.Replace(meshNetworks, "{address: 192.0.2.22, port: 15443}", "{address: 192.0.2.23, port: 443}", 1))
		waitCLA(t, net1, "//(6): 10.1.0.1:5000*2+mtls 10.3.0.1:5000*2 192.0.2.21:15443*1+mtls 192.0.2.23:443*1+mtls")
		waitCLA(t, net3, "//(6): 10.1.0.1:5000*2+mtls 10.3.0.1:5000*2 192.0.2.21:15443*1+mtls 192.0.2.23:443*1+mtls")
	})

	t.Run("invalid meshNetworks edit changes nothing and says why", func(t *testing.T) {
		before := net1.Responses()
		writeMeshNetworks(t, strings.Replace(meshNetworks, "port: 15443}\n    - {address: 192.0.2.22", "port: 70000}\n    - {address: 192.0.2.22", 1))
		kubetest.Eventually(t, 10*time.Second, func() error {
			if !strings.Contains(logs.String(), "networks.network2.gateways[0].port: must be 1-65535") {
				return fmt.Errorf("rejection not logged")
			}
			return nil
		})
		// A later valid change still goes through, and the rejected one never did.
		if err := kubetest.Deploy(ctx, cluster2.Client, helloworld("v2", true, "10.2.0.1", "10.2.0.3")); err != nil {
			t.Fatal(err)
		}
		waitCLA(t, net1, "//(8): 10.1.0.1:5000*2+mtls 10.3.0.1:5000*2 192.0.2.21:15443*2+mtls 192.0.2.23:443*2+mtls")
		if net1.Responses() == before {
			t.Fatal("no push reached the proxy")
		}
	})

	t.Run("labelled gateway Service gets a LoadBalancer address", func(t *testing.T) {
		gwSvc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "istio-eastwestgateway", Namespace: "istio-system",
				Labels: map[string]string{network.LabelNetwork: "network2"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"istio": "eastwestgateway"},
				Ports: []corev1.ServicePort{{Name: "tls", Port: 15443}}},
		}
		if err := kubetest.EnsureNamespace(ctx, cluster2.Client, "istio-system", nil); err != nil {
			t.Fatal(err)
		}
		svcs := cluster2.Client.CoreV1().Services("istio-system")
		created, err := svcs.Create(ctx, gwSvc, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svcs.Delete(context.Background(), gwSvc.Name, metav1.DeleteOptions{}) })
		setLB := func(ip string) {
			created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
			if created, err = svcs.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// Cluster2's endpoints now go through cluster2's own gateway.
		setLB("192.0.2.50")
		waitCLA(t, net1, "//(4): 10.1.0.1:5000*1+mtls 10.3.0.1:5000*1 192.0.2.50:15443*2+mtls")
		setLB("192.0.2.51")
		waitCLA(t, net1, "//(4): 10.1.0.1:5000*1+mtls 10.3.0.1:5000*1 192.0.2.51:15443*2+mtls")
		if err := svcs.Delete(ctx, gwSvc.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitCLA(t, net1, "//(8): 10.1.0.1:5000*2+mtls 10.3.0.1:5000*2 192.0.2.21:15443*2+mtls 192.0.2.23:443*2+mtls")
	})

	t.Run("delete and re-add a remote secret", func(t *testing.T) {
		if err := cluster1.Client.CoreV1().Secrets("istio-system").Delete(ctx, "istio-remote-secret-cluster3", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitCLA(t, net1, "//(6): 10.1.0.1:5000*2+mtls 192.0.2.21:15443*2+mtls 192.0.2.23:443*2+mtls")
		waitCLA(t, net2, "//(3): 10.1.0.1:5000*1+mtls 10.2.0.1:5000*1+mtls 10.2.0.3:5000*1+mtls")
		writeRemoteSecret(t, "istio-remote-secret-cluster3", cluster3, "cluster3")
		waitCLA(t, net1, "//(8): 10.1.0.1:5000*2+mtls 10.3.0.1:5000*2 192.0.2.21:15443*2+mtls 192.0.2.23:443*2+mtls")
	})
}
