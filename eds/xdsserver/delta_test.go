package xdsserver

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// TestDeltaProtocol: only changed resources are sent, removals are announced,
// unsubscribed resources are not sent, and a reconnecting proxy is not re-sent
// what it holds.
func TestDeltaProtocol(t *testing.T) { bothEncodings(t, testDeltaProtocol) }

func testDeltaProtocol(t *testing.T) {
	f := newXDSFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a missing response fails, not hangs
	defer cancel()
	st := f.deltaStream(ctx)
	recv := func() *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("d1"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{claA, claB}}); err != nil {
		t.Fatal(err)
	}
	first := recv()
	if len(first.GetResources()) != 2 {
		t.Fatalf("first response: %d resources, want 2", len(first.GetResources()))
	}
	versions := map[string]string{}
	for _, r := range first.GetResources() {
		versions[r.GetName()] = r.GetVersion()
	}

	f.change(hostA, "10.0.0.1", "10.0.0.3")
	resp := recv()
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != claA || len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("after A changed: %v removed %v, want only A", resp.GetResources(), resp.GetRemovedResources())
	}
	versions[claA] = resp.GetResources()[0].GetVersion()

	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		st, ok := f.s.streamFor("d1")
		if ok && len(st) == 1 {
			return nil
		}
		return errors.New("not yet: the unsubscription")
	})
	f.change(hostA, "10.0.0.1") // unsubscribed: not sent
	f.change(hostB)             // B removed
	resp = recv()
	if len(resp.GetResources()) != 0 || len(resp.GetRemovedResources()) != 1 || resp.GetRemovedResources()[0] != claB {
		t.Fatalf("after A (unsubscribed) changed and B went: %v removed %v, want B removed only", resp.GetResources(), resp.GetRemovedResources())
	}
	cancel()

	// Reconnect holding A at the version before its last change and B (gone).
	f.change(hostB, "10.0.1.1")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	st = f.deltaStream(ctx2)
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("d1"), TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{claA, claB}, InitialResourceVersions: versions}); err != nil {
		t.Fatal(err)
	}
	resp = recv()
	got := decodeCLAs(t, resourceValues(resp.GetResources()))
	if len(got) != 1 || got[claA] == nil || len(addresses(got[claA])) != 1 {
		t.Fatalf("on reconnect: %v, want only A (changed since; B is as the proxy holds it)", got)
	}
}

// TestDeltaAnswersEverySubscription: a subscribed name that does not exist is
// answered as removed, and subscribing again to a name the proxy holds sends it
// again.
func TestDeltaAnswersEverySubscription(t *testing.T) {
	bothEncodings(t, testDeltaAnswersEverySubscription)
}

func testDeltaAnswersEverySubscription(t *testing.T) {
	f := newXDSFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a missing response fails, not hangs
	defer cancel()
	st := f.deltaStream(ctx)
	const missing = "outbound|80||missing.ns.svc.cluster.local"
	recv := func() *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("d1"), TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{claA, missing}}); err != nil {
		t.Fatal(err)
	}
	resp := recv()
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != claA || !slices.Equal(resp.GetRemovedResources(), []string{missing}) {
		t.Fatalf("first response: %v removed %v; want A, and %s removed", resp.GetResources(), resp.GetRemovedResources(), missing)
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: resp.GetNonce(), ResourceNamesSubscribe: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	resp = recv()
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != claA || len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("after subscribing to A again: %v removed %v; want A", resp.GetResources(), resp.GetRemovedResources())
	}
}

// TestDeltaWildcardReconnect: a proxy that reconnects subscribing to "*" with the
// versions it holds has not subscribed to those names: once it unsubscribes from
// "*" it is sent nothing of them.
func TestDeltaWildcardReconnect(t *testing.T) {
	f := newXDSFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a missing response fails, not hangs
	defer cancel()
	st := f.deltaStream(ctx)
	recv := func() *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	held := map[string]string{}
	for _, n := range []string{claA, claB} {
		held[n] = f.group.feed.Current().Resources(resourcev3.EndpointType).Get(n).Version()
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: node("w1"), TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: held}); err != nil {
		t.Fatal(err)
	}
	if resp := recv(); len(resp.GetResources()) != 0 || len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("first response: %v removed %v, want nothing (the proxy holds every resource)", resp.GetResources(), resp.GetRemovedResources())
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		if have, ok := f.s.streamFor("w1"); ok && len(have) == 0 {
			return nil
		}
		return errors.New("not yet: the unsubscription from *")
	})
	f.change(hostA, "10.0.0.1", "10.0.0.9") // not subscribed to: not sent
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: []string{claB}}); err != nil {
		t.Fatal(err)
	}
	resp := recv()
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != claB {
		t.Fatalf("after unsubscribing from * and subscribing to B: %v, want B only", resp.GetResources())
	}
}
