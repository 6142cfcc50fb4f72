package eds

import (
	"testing"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/horizon-mesh/horizon/e2e/xdstest"
)

// TestProxiesReportTheirGroup: a connected proxy is reported with its group's view
// (role and network), the stream it came on, and what it was sent; its config dump
// holds what its group was sent.
func TestProxiesReportTheirGroup(t *testing.T) {
	f := newXDSFixture(t)
	st := sotwStreamFor(t, f)
	n := xdstest.Node("sidecar~10.9.0.1~p1.ns~ns.svc.cluster.local", "network1")
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: n, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{claA}}); err != nil {
		t.Fatal(err)
	}
	resp, _ := recvSotw(t, st)
	ps := f.s.Proxies()
	if len(ps) != 1 {
		t.Fatalf("proxies %+v, want one", ps)
	}
	p := ps[0]
	if p.ID != n.GetId() || p.Group != ViewOf(n).Key() || p.Role != RoleSidecar || p.Network != "network1" || p.Stream != "ads" {
		t.Errorf("proxy reported as %+v, want %s in group %s (sidecar, network1) on ads", p, n.GetId(), ViewOf(n).Key())
	}
	if sync := p.Types[resourcev3.EndpointType]; sync == nil || sync.Sent != resp.GetVersionInfo() {
		t.Errorf("EDS sync %+v, want sent at %s", sync, resp.GetVersionInfo())
	}
	dump, ok, err := f.s.ConfigDump(n.GetId())
	if err != nil || !ok {
		t.Fatalf("config dump: ok %v, error %v", ok, err)
	}
	if got := len(dump[resourcev3.EndpointType]); got != 2 {
		t.Errorf("config dump holds %d assignments, want 2 (the group's, not only those the proxy asked for)", got)
	}
	if _, ok, _ := f.s.ConfigDump("nobody"); ok {
		t.Error("config dump of a proxy that is not connected")
	}
}
