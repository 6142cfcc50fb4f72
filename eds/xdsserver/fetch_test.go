package xdsserver

import (
	"testing"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
)

// TestFetch: a unary fetch answers with the requested resources, and tells a
// client that already holds the current version that it is up to date.
func TestFetch(t *testing.T) {
	f := newXDSFixture(t)
	resp, err := f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("f1"), ResourceNames: []string{claB}})
	if err != nil {
		t.Fatal(err)
	}
	if clas := decodeCLAs(t, resp.GetResources()); len(clas) != 1 || len(addresses(clas[claB])) != 1 {
		t.Fatalf("fetch of B: %v", clas)
	}
	_, err = f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("f1"), ResourceNames: []string{claB}, VersionInfo: resp.GetVersionInfo()})
	if grpcstatus.Code(err) != codes.Unavailable {
		t.Fatalf("fetch at the current version: %v, want Unavailable (up to date)", err)
	}
	f.change(hostB, "10.0.1.1", "10.0.1.2")
	resp, err = f.eds.FetchEndpoints(t.Context(), &discoverygrpc.DiscoveryRequest{Node: node("f1"), ResourceNames: []string{claB}, VersionInfo: resp.GetVersionInfo()})
	if err != nil {
		t.Fatal(err)
	}
	if clas := decodeCLAs(t, resp.GetResources()); len(addresses(clas[claB])) != 2 {
		t.Fatalf("fetch after B changed: %v", clas)
	}
}
