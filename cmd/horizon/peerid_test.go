package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/cmd/localmesh/dataplane"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
)

// sanMismatch is how grpc-go's xDS credentials refuse a server certificate whose
// SANs match none of those the cluster accepts.
const sanMismatch = "do not match any of the accepted SANs"

// TestPeerIdentity makes real calls with grpc-go's own xDS client over mTLS, all
// certificates from the mesh CA: the client accepts a server only when it presents
// the SPIFFE identity of the service account its pod runs as in Kubernetes.
//
//  1. The only pod runs as "peer", but the server at its address presents
//     "intruder": every call is refused in the TLS handshake.
//  2. The endpoint moves to a server presenting "peer": calls succeed.
//  3. A pod running as "intruder" replaces it: Horizon pushes a cluster accepting
//     "intruder", and the server that was refused in (1) now answers.
func TestPeerIdentity(t *testing.T) {
	if kubetest.RunInNetns(t, "peerid_test.go") {
		return
	}
	ctx := t.Context()
	dir := t.TempDir()
	const host = "peer.sample.svc.cluster.local"
	certs, err := dataplane.NewCerts(filepath.Join(dir, "sleep"), "sample", "sleep")
	if err != nil {
		t.Fatal(err)
	}
	startPod := func(name, sa, ip string) {
		t.Helper()
		c, err := certs.Issue(filepath.Join(dir, name), "sample", sa)
		if err != nil {
			t.Fatal(err)
		}
		p, err := dataplane.StartPod(name, sa, ip+":5000", c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
	}
	// The servers: their names are the identities they present.
	startPod("peer", "peer", v1Addr)
	startPod("intruder", "intruder", v2aAddr)

	deploy := func(pod, sa, ip string) {
		t.Helper()
		err := kubetest.Deploy(ctx, cluster1.Client, kubetest.Service{
			Namespace: "sample", Name: "peer",
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
			Backends: []kubetest.Backend{{
				Pod: pod, IP: ip, Ready: true, ServiceAccount: sa,
				Labels: map[string]string{network.LabelTLSMode: network.TLSModeIstio},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	deploy("peer-0", "peer", v2aAddr)
	xdsAddr, _, _ := startServe(t)
	client, err := dataplane.Dial(xdsAddr, "sidecar~192.0.2.30~sleep.sample~sample.svc.cluster.local", "", host+":5000", certs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })

	// (1) Refused: no call may succeed, and the refusal is the identity check's.
	kubetest.Eventually(t, 20*time.Second, func() error {
		v, _, err := client.CallNow(ctx)
		if err == nil {
			t.Fatalf("a server presenting spiffe://cluster.local/ns/sample/sa/%s answered for pods running as peer", v)
		}
		if !strings.Contains(err.Error(), sanMismatch) {
			return fmt.Errorf("call failed with %v, want the handshake refused with %q", err, sanMismatch)
		}
		return nil
	})
	_, _, err = client.CallNow(ctx)
	t.Logf("wrong identity: %v", err)

	// answeredBy waits until calls are answered by the server presenting want.
	answeredBy := func(want string) {
		t.Helper()
		kubetest.Eventually(t, 20*time.Second, func() error {
			v, _, err := client.CallNow(ctx)
			if err != nil {
				return err
			}
			if v != want {
				return fmt.Errorf("answered by %s, want %s", v, want)
			}
			return nil
		})
	}
	// (2) The right identity.
	deploy("peer-1", "peer", v1Addr)
	answeredBy("peer")
	// (3) The identities behind the service change: a new cluster is pushed.
	deploy("intruder-0", "intruder", v2aAddr)
	answeredBy("intruder")
	for range 20 {
		if v, _, err := client.Call(ctx); err != nil || v != "intruder" {
			t.Fatalf("call answered by %q, err %v; want intruder", v, err)
		}
	}
}
