package eds

import (
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
)

func TestPassthroughHostPatterns(t *testing.T) {
	tests := []struct {
		hosts   []string
		gateway string
		host    string
		ns      string
		want    bool
	}{
		{[]string{"*"}, "sample/gw", "helloworld.sample.svc.cluster.local", "sample", true},
		{[]string{"*.local"}, "istio-system/gw", "helloworld.sample.svc.cluster.local", "sample", true},
		{[]string{"*.example.com"}, "istio-system/gw", "helloworld.sample.svc.cluster.local", "sample", false},
		{[]string{"sample/*"}, "istio-system/gw", "helloworld.sample.svc.cluster.local", "sample", true},
		{[]string{"sample/*"}, "istio-system/gw", "web.other.svc.cluster.local", "other", false},
		{[]string{"./*"}, "sample/gw", "helloworld.sample.svc.cluster.local", "sample", true},
		{[]string{"./*"}, "istio-system/gw", "helloworld.sample.svc.cluster.local", "sample", false},
		{[]string{"*/helloworld.sample.svc.cluster.local"}, "x/gw", "helloworld.sample.svc.cluster.local", "sample", true},
		{[]string{"helloworld.sample.svc.cluster.local"}, "x/gw", "web.sample.svc.cluster.local", "sample", false},
		{[]string{"other/*", "*.local"}, "x/gw", "web.sample.svc.cluster.local", "sample", true},
	}
	for _, tt := range tests {
		s := PassthroughServer{Gateway: tt.gateway, Port: 443, Hosts: tt.hosts}
		if got := s.matchesHost(tt.host, tt.ns); got != tt.want {
			t.Errorf("hosts %v of %s, %s in %s: got %v, want %v", tt.hosts, tt.gateway, tt.host, tt.ns, got, tt.want)
		}
	}
}

func TestRouterResources(t *testing.T) {
	hosts := map[string]*hostState{
		"helloworld.sample.svc.cluster.local": {namespace: "sample", ports: []int32{5000}},
		"web.other.svc.cluster.local":         {namespace: "other", ports: []int32{80, 8080}},
	}
	servers := []PassthroughServer{
		{Gateway: "sample/a", Selector: map[string]string{"istio": "ingressgateway"}, Port: 443, Hosts: []string{"sample/*"}},
		{Gateway: "other/b", Selector: map[string]string{"istio": "ingressgateway"}, Port: 15443, Hosts: []string{"*"}},
		{Gateway: "other/c", Selector: map[string]string{"istio": "eastwest"}, Port: 9443, Hosts: []string{"*"}},
	}
	chains := func(ls []types.Resource) string {
		var out []string
		for _, r := range ls {
			l := r.(*listenerv3.Listener)
			if err := l.ValidateAll(); err != nil {
				t.Fatalf("listener %s invalid for Envoy: %v", l.Name, err)
			}
			var names []string
			for _, fc := range l.FilterChains {
				names = append(names, fc.FilterChainMatch.ServerNames[0])
			}
			out = append(out, l.Name+"="+strings.Join(names, ","))
		}
		return strings.Join(out, " ")
	}

	selected := routerServers(servers, map[string]string{"istio": "ingressgateway", "app": "x"}, true)
	ls, cs := buildRouterResources(selected, hosts, nil)
	want := "0.0.0.0_443=outbound_.5000_._.helloworld.sample.svc.cluster.local " +
		"0.0.0.0_15443=outbound_.5000_._.helloworld.sample.svc.cluster.local,outbound_.80_._.web.other.svc.cluster.local,outbound_.8080_._.web.other.svc.cluster.local"
	if got := chains(ls); got != want {
		t.Errorf("listeners\n got %s\nwant %s", got, want)
	}
	if len(cs) != 3 {
		t.Errorf("clusters = %d, want 3 (one per SNI)", len(cs))
	}

	// The gateway Service maps 443 to 8443: that listener binds, and is named by,
	// 8443; 15443 maps to itself.
	svcs := []*clusterregistry.Service{{
		Name: "istio-ingressgateway", Namespace: "istio-system", Cluster: "c1",
		Selector: map[string]string{"istio": "ingressgateway"},
		Ports: []clusterregistry.ServicePort{
			{Name: "https", Port: 443, Protocol: "TCP", TargetPort: 8443},
			{Name: "tls", Port: 15443, Protocol: "TCP", TargetPort: 15443},
		},
	}}
	ls, _ = buildRouterResources(selected, hosts, svcs)
	if got, want := chains(ls), strings.ReplaceAll(want, "0.0.0.0_443=", "0.0.0.0_8443="); got != want {
		t.Errorf("listeners behind the gateway Service\n got %s\nwant %s", got, want)
	}
	if l := ls[0].(*listenerv3.Listener); l.GetAddress().GetSocketAddress().GetPortValue() != 8443 {
		t.Errorf("listener %s binds %v, want 8443", l.GetName(), l.GetAddress())
	}

	// Nothing selects this gateway: the default 15443 listener for every service, or
	// none when the default is off.
	ls, _ = buildRouterResources(routerServers(servers, map[string]string{"istio": "other"}, true), hosts, nil)
	if got := chains(ls); !strings.HasPrefix(got, "0.0.0.0_15443=") || strings.Count(got, "outbound_.") != 3 {
		t.Errorf("default listener = %s", got)
	}
	ls, cs = buildRouterResources(routerServers(servers, map[string]string{"istio": "other"}, false), hosts, nil)
	if len(ls) != 0 || len(cs) != 0 {
		t.Errorf("default off: %d listeners, %d clusters", len(ls), len(cs))
	}
}

// TestListenerPort maps Gateway server ports to the ports a router binds, from the
// Services selecting the router's pods.
func TestListenerPort(t *testing.T) {
	ingress := map[string]string{"istio": "ingressgateway"}
	// gw is a Service in cluster c selecting pods with selector.
	gw := func(c network.ClusterID, ns, name string, selector map[string]string, ports ...clusterregistry.ServicePort) *clusterregistry.Service {
		return &clusterregistry.Service{
			Host: name + "." + ns + ".svc.cluster.local", Name: name, Namespace: ns, Cluster: c,
			Selector: selector, Ports: ports,
		}
	}
	tcp := func(port, target int32) clusterregistry.ServicePort {
		return clusterregistry.ServicePort{Name: "p", Port: port, Protocol: "TCP", TargetPort: target}
	}
	named := func(port int32, name string, resolved int32) clusterregistry.ServicePort {
		return clusterregistry.ServicePort{Name: "p", Port: port, Protocol: "TCP", TargetPort: resolved, TargetPortName: name}
	}
	mn, err := network.ParseMeshNetworks([]byte(`networks: {network3: {endpoints: [{fromRegistry: c3}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	nets, err := network.Compile(mn)
	if err != nil {
		t.Fatal(err)
	}
	topo := NewTopology(nets, nil)
	topo.ClusterNetworks = map[network.ClusterID]network.NetworkID{"c1": "network1", "c2": "network2"}
	router := View{Role: RoleRouter, Network: "network2", Labels: map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}}

	tests := []struct {
		name string
		svcs []*clusterregistry.Service
		view View // router unless set
		port uint32
		want uint32
	}{
		{
			name: "today's non-root gateway: 443 → 8443",
			svcs: []*clusterregistry.Service{gw("c2", "istio-system", "istio-ingressgateway", ingress, tcp(80, 8080), tcp(443, 8443))},
			port: 443, want: 8443,
		},
		{
			name: "the reference scenario's gateway: 443 → 443",
			svcs: []*clusterregistry.Service{gw("c2", "istio-system", "istio-ingressgateway", ingress, tcp(443, 443))},
			port: 443, want: 443,
		},
		{
			name: "a named target port, resolved from its endpoints",
			svcs: []*clusterregistry.Service{gw("c2", "istio-system", "istio-ingressgateway", ingress, named(443, "https", 8443))},
			port: 443, want: 8443,
		},
		{
			name: "a named target port without endpoints: the next Service, else the Gateway port",
			svcs: []*clusterregistry.Service{gw("c2", "istio-system", "istio-ingressgateway", ingress, named(443, "https", 0))},
			port: 443, want: 443,
		},
		{
			name: "no Service selects the router: the Gateway port",
			port: 443, want: 443,
		},
		{
			name: "the selector does not match",
			svcs: []*clusterregistry.Service{
				gw("c2", "istio-system", "istio-eastwestgateway", map[string]string{"istio": "eastwestgateway"}, tcp(443, 8443)),
				gw("c2", "istio-system", "partial", map[string]string{"istio": "ingressgateway", "version": "v2"}, tcp(443, 9443)),
				gw("c2", "istio-system", "no-selector", nil, tcp(443, 7443)),
			},
			port: 443, want: 443,
		},
		{
			name: "the Service has no such port",
			svcs: []*clusterregistry.Service{gw("c2", "istio-system", "istio-ingressgateway", ingress, tcp(15443, 15443))},
			port: 443, want: 443,
		},
		{
			name: "a UDP port is not the server's",
			svcs: []*clusterregistry.Service{gw("c2", "istio-system", "istio-ingressgateway", ingress,
				clusterregistry.ServicePort{Name: "quic", Port: 443, Protocol: "UDP", TargetPort: 9443}, tcp(443, 8443))},
			port: 443, want: 8443,
		},
		{
			name: "a Service on another network is ignored when one on the router's exists",
			svcs: []*clusterregistry.Service{
				gw("c1", "istio-system", "istio-ingressgateway", ingress, tcp(443, 9443)),
				gw("c2", "istio-system", "istio-ingressgateway", ingress, tcp(443, 8443)),
			},
			port: 443, want: 8443,
		},
		{
			name: "... even when that one lacks the port",
			svcs: []*clusterregistry.Service{
				gw("c1", "istio-system", "istio-ingressgateway", ingress, tcp(443, 9443)),
				gw("c2", "istio-system", "istio-ingressgateway", ingress, tcp(15443, 15443)),
			},
			port: 443, want: 443,
		},
		{
			name: "only on another network: that one",
			svcs: []*clusterregistry.Service{gw("c1", "istio-system", "istio-ingressgateway", ingress, tcp(443, 9443))},
			port: 443, want: 9443,
		},
		{
			name: "the router's network from its cluster's meshNetworks fromRegistry",
			svcs: []*clusterregistry.Service{
				gw("c2", "istio-system", "istio-ingressgateway", ingress, tcp(443, 8443)),
				gw("c3", "istio-system", "istio-ingressgateway", ingress, tcp(443, 9443)),
			},
			view: View{Role: RoleRouter, Cluster: "c3", Labels: router.Labels},
			port: 443, want: 9443,
		},
		{
			name: "several: by cluster, namespace and name",
			svcs: []*clusterregistry.Service{
				gw("c2", "istio-system", "zz", ingress, tcp(443, 9443)),
				gw("c2", "gateways", "zz", ingress, tcp(443, 7443)),
				gw("c2", "istio-system", "aa", ingress, tcp(443, 8443)),
			},
			port: 443, want: 7443,
		},
		{
			name: "several: the first with the port",
			svcs: []*clusterregistry.Service{
				gw("c2", "istio-system", "aa", ingress, tcp(80, 8080)),
				gw("c2", "istio-system", "bb", ingress, tcp(443, 8443)),
			},
			port: 443, want: 8443,
		},
		{
			name: "a router without labels: the Gateway port",
			svcs: []*clusterregistry.Service{gw("c2", "istio-system", "istio-ingressgateway", ingress, tcp(443, 8443))},
			view: View{Role: RoleRouter, Network: "network2"},
			port: 443, want: 443,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.view
			if v.Role == "" {
				v = router
			}
			// Candidates come in any order.
			reversed := slices.Clone(tt.svcs)
			slices.Reverse(reversed)
			for _, svcs := range [][]*clusterregistry.Service{tt.svcs, reversed} {
				if got := listenerPort(tt.port, routerServices(svcs, v, topo)); got != tt.want {
					t.Errorf("server port %d binds %d, want %d", tt.port, got, tt.want)
				}
			}
		})
	}
}

func TestGRPCResourcesValidate(t *testing.T) {
	const host = "helloworld.sample.svc.cluster.local"
	for _, m := range []interface{ ValidateAll() error }{
		buildGRPCListener(host, 5000), buildGRPCRoute(host, 5000),
		buildGRPCCluster(host, 5000, true, PeerIdentities{IDs: []string{"spiffe://cluster.local/ns/sample/sa/helloworld"}}), buildGRPCCluster(host, 5000, false, PeerIdentities{}),
	} {
		if err := m.ValidateAll(); err != nil {
			t.Errorf("%T invalid for Envoy: %v", m, err)
		}
	}
}
