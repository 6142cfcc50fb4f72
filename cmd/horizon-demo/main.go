// Command horizon-demo runs Horizon's mission end to end on one machine: two local
// Kubernetes API servers (cluster1 on network1, cluster2 on network2), the examples/
// manifests, a remote Secret made by `horizon create-remote-secret`, `horizon serve`,
// and real gRPC calls from network1 that land on helloworld v1 (by pod IP) and v2
// (through network2's gateway). `make demo` runs it.
//
// Each cluster runs kube-controller-manager's EndpointSlice controller, which makes
// the slices from the Services and Pods as in a real cluster. There is no kubelet: the
// demo plays its part, starting the pods as real gRPC servers and writing their IPs
// and readiness, and sets the ingress gateway Service's load-balancer address as a
// cloud would. The
// network2 gateway is nginx routing by SNI without terminating TLS, standing in for
// Envoy. Everything runs in a private network namespace whose loopback holds the pod
// and gateway addresses.
//
// Then helloworld is marked PreferClose and the demo shows failover: v1's server
// stopped, calls go to v2 through network2's gateway; v1 marked not ready and
// restarted, calls stay on v2; v1 ready, calls return to v1.
//
// KEEP=1 leaves everything running and prints how to look around.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/cmd/localmesh"
	"github.com/horizon-mesh/horizon/cmd/localmesh/dataplane"
	"github.com/horizon-mesh/horizon/network"
)

const (
	host    = "helloworld.sample.svc.cluster.local"
	claName = "outbound|5000||" + host
	v1Addr  = "192.0.2.11"
	v2Addr  = "192.0.2.12"
	gwAddr  = "192.0.2.20"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(ctx context.Context) error {
	if !dataplane.InNetns() {
		// grpc-go reads GRPC_EXPERIMENTAL_XDS_SNI at start: it makes the proxyless
		// client send the SNI that the passthrough gateway routes on.
		cmd, err := dataplane.ReexecCommand(os.Args, "GRPC_EXPERIMENTAL_XDS_SNI=true")
		if err != nil {
			return err
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		step("entering a private network namespace for the demo's pod and gateway addresses")
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start the demo in a network namespace (needs root or unprivileged user namespaces): %w", err)
		}
		go func() {
			<-ctx.Done()
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}()
		return cmd.Wait()
	}
	if err := dataplane.SetupNetns(v1Addr, v2Addr, gwAddr); err != nil {
		return err
	}
	bin, err := binDir()
	if err != nil {
		return err
	}
	examples, err := examplesDir()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "horizon-demo-")
	if err != nil {
		return err
	}
	keep := os.Getenv("KEEP") == "1"
	if !keep {
		defer os.RemoveAll(work)
	}

	step("starting two Kubernetes clusters (etcd, kube-apiserver and kube-controller-manager from %s)", localmesh.BinDir())
	env, err := localmesh.Start()
	if err != nil {
		return err
	}
	defer env.Close()
	c1, err := env.StartClusterWith(ctx, "cluster1", localmesh.ClusterOptions{ControllerManager: true})
	if err != nil {
		return err
	}
	c2, err := env.StartClusterWith(ctx, "cluster2", localmesh.ClusterOptions{ControllerManager: true})
	if err != nil {
		return err
	}
	kc1, kc2 := filepath.Join(work, "cluster1.kubeconfig"), filepath.Join(work, "cluster2.kubeconfig")
	for path, c := range map[string]*localmesh.Cluster{kc1: c1, kc2: c2} {
		b, err := c.Kubeconfig(c.Config.BearerToken)
		if err == nil {
			err = os.WriteFile(path, b, 0o600)
		}
		if err != nil {
			return err
		}
	}
	fmt.Printf("    cluster1 (config cluster, network1): %s\n    cluster2 (remote, network2):         %s\n", c1.Host, c2.Host)

	step("applying examples/ — cluster1: Gateway CRD, Horizon's RBAC, meshNetworks, helloworld v1, the AUTO_PASSTHROUGH Gateway; cluster2: reader RBAC, helloworld v2")
	for _, a := range []struct {
		c    *localmesh.Cluster
		file string
	}{
		{c1, "gateway-crd.yaml"}, {c1, "horizon.yaml"}, {c1, "mesh-networks.yaml"}, {c1, "helloworld-v1.yaml"}, {c1, "cross-network-gateway.yaml"},
		{c2, "remote-reader.yaml"}, {c2, "helloworld-v2.yaml"},
	} {
		if err := localmesh.ApplyFile(ctx, a.c.Config, filepath.Join(examples, a.file)); err != nil {
			return err
		}
		fmt.Printf("    %s ← examples/%s\n", a.c.Name, a.file)
	}

	step("starting the pods (real gRPC servers with mTLS) and the network2 ingress gateway (nginx, SNI passthrough)")
	// The client runs as sleep; the helloworld pods as their namespace's default
	// service account, the identity Horizon tells the client to expect of them.
	certs, err := dataplane.NewCerts(work, "sample", "sleep")
	if err != nil {
		return err
	}
	podCerts, err := certs.Issue(filepath.Join(work, "helloworld"), "sample", "default")
	if err != nil {
		return err
	}
	pods := map[string]*dataplane.Pod{}
	for _, p := range []struct{ name, version, addr string }{{"helloworld-v1-0", "v1", v1Addr}, {"helloworld-v2-0", "v2", v2Addr}} {
		pod, err := dataplane.StartPod(p.name, p.version, p.addr+":5000", podCerts)
		if err != nil {
			return err
		}
		pods[p.version] = pod
	}
	defer func() {
		for _, p := range pods {
			p.Stop()
		}
	}()
	gw, err := dataplane.StartGateway(filepath.Join(work, "gateway"), gwAddr+":443", map[string][]string{
		"outbound_.5000_._." + host: {v2Addr + ":5000"},
	})
	if err != nil {
		return err
	}
	defer gw.Stop()
	if err := playKubelet(ctx, c1, "v1", v1Addr, "node-1", "zone-a"); err != nil {
		return err
	}
	if err := playKubelet(ctx, c2, "v2", v2Addr, "node-2", "zone-b"); err != nil {
		return err
	}
	if err := ingressGateway(ctx, c2); err != nil {
		return err
	}
	fmt.Printf("    helloworld-v1-0 %s:5000 (cluster1)   helloworld-v2-0 %s:5000 (cluster2)   istio-ingressgateway %s:443 (cluster2)\n", v1Addr, v2Addr, gwAddr)

	step("creating the remote Secret for cluster2 with `horizon create-remote-secret` and applying it to cluster1")
	var secret, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "horizon"), "create-remote-secret", "--kubeconfig", kc2, "--name", "cluster2", "--token-wait", "2s")
	cmd.Stdout, cmd.Stderr = &secret, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("create-remote-secret: %v: %s", err, stderr.String())
	}
	if err := localmesh.Apply(ctx, c1.Config, secret.Bytes()); err != nil {
		return fmt.Errorf("apply the remote Secret: %w", err)
	}
	fmt.Println("    istio-system/istio-remote-secret-cluster2 (label istio/multiCluster=true) created in cluster1")

	step("starting `horizon serve` against cluster1, as service account istio-system/horizon (RBAC from examples/horizon.yaml)")
	kcHorizon := filepath.Join(work, "horizon.kubeconfig")
	if err := serviceAccountKubeconfig(ctx, c1, "istio-system", "horizon", kcHorizon); err != nil {
		return err
	}
	logPath := filepath.Join(work, "horizon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	serve := exec.Command(filepath.Join(bin, "horizon"), "serve", "--kubeconfig", kcHorizon, "--cluster-id", "cluster1",
		"--xds-address", "127.0.0.1:15010", "--http-address", "127.0.0.1:15014")
	serve.Stdout, serve.Stderr = logf, logf
	serve.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := serve.Start(); err != nil {
		return err
	}
	defer func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		_ = serve.Wait()
	}()
	if err := waitReady(ctx, "http://127.0.0.1:15014/readyz", 30*time.Second); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logPath)
	}
	fmt.Println("    /readyz: ok (both clusters synced)")

	step("what a proxy on each network is sent for %s", claName)
	for _, net := range []string{"network1", "network2"} {
		cla, err := waitCLA(ctx, net, 2)
		if err != nil {
			return err
		}
		fmt.Printf("    sidecar on %s:\n", net)
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				addr := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
				fmt.Printf("      %-20s weight %d  zone %-6s  %s\n", addr, e.GetLoadBalancingWeight().GetValue(), l.GetLocality().GetZone(), describe(addr))
			}
		}
	}

	step("calling helloworld 20 times from network1 (proxyless gRPC, grpc-go's xDS client, mTLS)")
	client, err := dataplane.DialNode("127.0.0.1:15010", dataplane.Node{
		ID: "sidecar~192.0.2.30~sleep-0.sample~sample.svc.cluster.local", Network: "network1", Region: "local", Zone: "zone-a",
	}, host+":5000", certs)
	if err != nil {
		return err
	}
	defer client.Close()
	// grpc-go sends calls only to localities it has connected to; the one behind
	// the gateway (mTLS through nginx) can connect a moment after the local pod.
	// Call until both have answered once, then count.
	seen := map[string]bool{}
	warmup := 0
	for deadline := time.Now().Add(15 * time.Second); !(seen["v1"] && seen["v2"]) && time.Now().Before(deadline); warmup++ {
		v, _, err := client.Call(ctx)
		if err != nil {
			return fmt.Errorf("call failed: %w", err)
		}
		seen[v] = true
	}
	fmt.Printf("    (%d warm-up calls until both localities were connected)\n", warmup)
	counts := map[string]int{}
	for range 20 {
		v, pod, err := client.Call(ctx)
		if err != nil {
			return fmt.Errorf("call failed: %w", err)
		}
		counts[v]++
		fmt.Printf("    Hello version: %s, instance: %s\n", v, pod)
	}
	fmt.Printf("    v1: %d calls (pod IP, cluster1), v2: %d calls (through network2's gateway, cluster2)\n", counts["v1"], counts["v2"])
	// The gateway logs a connection when it closes.
	client.Close()
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(gw.Log(), "outbound_.") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	for _, line := range strings.Split(strings.TrimSpace(gw.Log()), "\n") {
		if line != "" && !strings.HasPrefix(line, "- ") { // "- ": the demo's own readiness probe
			fmt.Printf("    gateway connection (SNI upstream status): %s\n", line)
		}
	}
	if counts["v1"] == 0 || counts["v2"] == 0 {
		return errors.New("calls did not land on both versions")
	}
	if err := failover(ctx, c1, certs, podCerts, pods); err != nil {
		return err
	}

	if keep {
		fmt.Printf(`
KEEP=1: everything keeps running until Ctrl-C. From another shell, enter the demo's
network namespace (it holds 127.0.0.1:15010 xDS, 127.0.0.1:15014 HTTP, the pods and
the gateway):

  nsenter --net=/proc/%d/ns/net curl -s 127.0.0.1:15014/readyz
  nsenter --net=/proc/%d/ns/net bin/horizon status --address 127.0.0.1:15014
  kubeconfigs: %s  %s
  Horizon's log: %s
`, os.Getpid(), os.Getpid(), kc1, kc2, logPath)
		<-ctx.Done()
		return nil
	}
	step("done: calls landed on both versions; cleaning up")
	return nil
}

// failover marks helloworld PreferClose and runs the failover scenario
// (dataplane.Failover) from network1: v1 stopped, calls go to v2 through network2's
// gateway; v1 not ready, then back; calls return to v1. Counts are printed.
func failover(ctx context.Context, c1 *localmesh.Cluster, certs, podCerts *dataplane.Certs, pods map[string]*dataplane.Pod) error {
	step("marking helloworld PreferClose (spec.trafficDistribution in cluster1): close endpoints first, network2's gateway as failover")
	svcs := c1.Client.CoreV1().Services("sample")
	svc, err := svcs.Get(ctx, "helloworld", metav1.GetOptions{})
	if err != nil {
		return err
	}
	preferClose := "PreferClose"
	svc.Spec.TrafficDistribution = &preferClose
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set helloworld's traffic distribution: %w", err)
	}
	cla, err := waitPriorities(ctx, 2)
	if err != nil {
		return err
	}
	fmt.Println("    sidecar on network1:")
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			addr := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
			fmt.Printf("      priority %d  %-20s zone %-6s  %s\n", l.GetPriority(), addr, l.GetLocality().GetZone(), describe(addr))
		}
	}

	step("failover from network1 (grpc-go's xDS client, zone-a): v1 stopped, v1 not ready, v1 back; 20 calls counted at each step")
	client, err := dataplane.DialNode("127.0.0.1:15010", dataplane.Node{
		ID: "sidecar~192.0.2.30~sleep-0.sample~sample.svc.cluster.local", Network: "network1", Region: "local", Zone: "zone-a",
	}, host+":5000", certs)
	if err != nil {
		return err
	}
	defer client.Close()
	f := dataplane.Failover{
		Call: func(ctx context.Context) (string, error) {
			v, _, err := client.CallNow(ctx)
			return v, err
		},
		Local: "v1", Remote: "v2",
		StopLocal: func() error {
			fmt.Println("    stopping helloworld-v1-0's server; its EndpointSlice still lists it as ready")
			pods["v1"].Stop()
			return nil
		},
		StartLocal: func() error {
			fmt.Println("    starting helloworld-v1-0's server again (still not ready)")
			p, err := dataplane.StartPod("helloworld-v1-0", "v1", v1Addr+":5000", podCerts)
			if err == nil {
				pods["v1"] = p
			}
			return err
		},
		SetLocalReady: func(ctx context.Context, ready bool) error {
			fmt.Printf("    marking helloworld-v1-0 ready=%v\n", ready)
			return playKubeletReady(ctx, c1, "v1", v1Addr, "node-1", ready)
		},
		Calls: 20,
		Logf:  func(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) },
	}
	if _, err := f.Run(ctx); err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	return nil
}

// waitPriorities waits until a sidecar on network1 is sent helloworld in n
// priorities.
func waitPriorities(ctx context.Context, n int) (*endpointv3.ClusterLoadAssignment, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cla, err := dataplane.FetchCLA(fctx, "127.0.0.1:15010", "sidecar~192.0.2.40~sleep-1.sample~sample.svc.cluster.local",
			map[string]any{"NETWORK": "network1"}, claName)
		cancel()
		if err == nil {
			top := -1
			for _, l := range cla.GetEndpoints() {
				top = max(top, int(l.GetPriority()))
			}
			if top+1 == n {
				return cla, nil
			}
			err = fmt.Errorf("%d priorities, want %d", top+1, n)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sidecar on network1: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// describe says what an address in the demo is.
func describe(addr string) string {
	switch {
	case strings.HasPrefix(addr, v1Addr+":"):
		return "helloworld-v1 pod IP (cluster1, network1)"
	case strings.HasPrefix(addr, v2Addr+":"):
		return "helloworld-v2 pod IP (cluster2, network2)"
	case strings.HasPrefix(addr, gwAddr+":"):
		return "network2's ingress gateway, standing in for cluster2's v2 pod"
	}
	return ""
}

// waitCLA waits until a sidecar on net is sent helloworld with n endpoints.
func waitCLA(ctx context.Context, net string, n int) (*endpointv3.ClusterLoadAssignment, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cla, err := dataplane.FetchCLA(fctx, "127.0.0.1:15010", "sidecar~192.0.2.40~sleep-1.sample~sample.svc.cluster.local",
			map[string]any{"NETWORK": net}, claName)
		cancel()
		if err == nil {
			count := 0
			for _, l := range cla.GetEndpoints() {
				count += len(l.GetLbEndpoints())
			}
			if count == n {
				return cla, nil
			}
			err = fmt.Errorf("%d endpoints, want %d", count, n)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sidecar on %s: %w", net, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// playKubelet does what the kubelet would: a pod for helloworld-<version> on a node
// in zone, its IP and readiness. The cluster's EndpointSlice controller puts it in
// the slice of the helloworld Service applied from examples/.
func playKubelet(ctx context.Context, c *localmesh.Cluster, version, ip, node, zone string) error {
	if err := localmesh.CreateNode(ctx, c.Client, node, "local", zone, ""); err != nil {
		return err
	}
	return playKubeletReady(ctx, c, version, ip, node, true)
}

// playKubeletReady sets the readiness of helloworld-<version>'s pod, as its
// kubelet would after a readiness probe.
func playKubeletReady(ctx context.Context, c *localmesh.Cluster, version, ip, node string, ready bool) error {
	return localmesh.DeployPods(ctx, c.Client, localmesh.Service{
		Namespace: "sample", Name: "helloworld",
		Labels: map[string]string{"app": "helloworld"},
		Ports:  []corev1.ServicePort{{Name: "http", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
		Backends: []localmesh.Backend{{
			Pod: "helloworld-" + version + "-0", IP: ip, Node: node, Ready: ready,
			Labels: map[string]string{"version": version, network.LabelTLSMode: network.TLSModeIstio},
		}},
	})
}

// ingressGateway creates cluster2's istio-ingressgateway Service (named by
// meshNetworks' registryServiceName) and gives it a load-balancer address, as a
// cloud would.
func ingressGateway(ctx context.Context, c *localmesh.Cluster) error {
	svcs := c.Client.CoreV1().Services("istio-system")
	svc, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-ingressgateway", Namespace: "istio-system",
			Labels: map[string]string{"istio": "ingressgateway"}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"istio": "ingressgateway"},
			Ports:    []corev1.ServicePort{{Name: "tls", Port: 443, TargetPort: intstr.FromInt32(8443)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create istio-ingressgateway: %w", err)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: gwAddr}}
	if _, err := svcs.UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set the gateway's load-balancer address: %w", err)
	}
	return nil
}

// serviceAccountKubeconfig writes a kubeconfig for cluster c that authenticates as
// service account ns/name with a token from the TokenRequest API.
func serviceAccountKubeconfig(ctx context.Context, c *localmesh.Cluster, ns, name, path string) error {
	secs := int64(24 * 3600)
	tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for %s/%s: %w", ns, name, err)
	}
	b, err := c.Kubeconfig(tr.Status.Token)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func waitReady(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("horizon not ready: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// binDir is where `make build` put the horizon binary: next to this one.
func binDir() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(self)
	if _, err := os.Stat(filepath.Join(dir, "horizon")); err != nil {
		return "", fmt.Errorf("horizon binary not found next to %s (run `make build`)", self)
	}
	return dir, nil
}

// examplesDir finds examples/ from the working directory (the repository root).
func examplesDir() (string, error) {
	if d := os.Getenv("HORIZON_EXAMPLES"); d != "" {
		return d, nil
	}
	if _, err := os.Stat(filepath.Join("examples", "helloworld-v1.yaml")); err != nil {
		return "", errors.New("examples/ not found: run the demo from the repository root (make demo)")
	}
	return "examples", nil
}
