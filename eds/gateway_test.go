package eds

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
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
	ls, cs := buildRouterResources(selected, hosts)
	want := "0.0.0.0_443=outbound_.5000_._.helloworld.sample.svc.cluster.local " +
		"0.0.0.0_15443=outbound_.5000_._.helloworld.sample.svc.cluster.local,outbound_.80_._.web.other.svc.cluster.local,outbound_.8080_._.web.other.svc.cluster.local"
	if got := chains(ls); got != want {
		t.Errorf("listeners\n got %s\nwant %s", got, want)
	}
	if len(cs) != 3 {
		t.Errorf("clusters = %d, want 3 (one per SNI)", len(cs))
	}

	// Nothing selects this gateway: the default 15443 listener for every service, or
	// none when the default is off.
	ls, _ = buildRouterResources(routerServers(servers, map[string]string{"istio": "other"}, true), hosts)
	if got := chains(ls); !strings.HasPrefix(got, "0.0.0.0_15443=") || strings.Count(got, "outbound_.") != 3 {
		t.Errorf("default listener = %s", got)
	}
	ls, cs = buildRouterResources(routerServers(servers, map[string]string{"istio": "other"}, false), hosts)
	if len(ls) != 0 || len(cs) != 0 {
		t.Errorf("default off: %d listeners, %d clusters", len(ls), len(cs))
	}
}

func TestGRPCResourcesValidate(t *testing.T) {
	const host = "helloworld.sample.svc.cluster.local"
	for _, m := range []interface{ ValidateAll() error }{
		buildGRPCListener(host, 5000), buildGRPCRoute(host, 5000),
		buildGRPCCluster(host, 5000, true), buildGRPCCluster(host, 5000, false),
	} {
		if err := m.ValidateAll(); err != nil {
			t.Errorf("%T invalid for Envoy: %v", m, err)
		}
	}
}
