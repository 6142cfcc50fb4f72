package network_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/horizon-mesh/horizon/network"
)

func TestParseMeshConfigServiceSettings(t *testing.T) {
	const entry = "serviceSettings:\n- settings: {clusterLocal: %s}\n  hosts: %s\n"
	for _, tc := range []struct {
		name, yaml    string
		local, remote []string // hosts that are, and are not, cluster-local
		err           string   // in the error; "" for none
	}{
		{name: "none", yaml: "", remote: []string{"a.ns.svc.cluster.local"}},
		{name: "exact", yaml: fmt.Sprintf(entry, "true", `["helloworld.sample.svc.cluster.local"]`),
			local:  []string{"helloworld.sample.svc.cluster.local", "HelloWorld.sample.svc.cluster.local"},
			remote: []string{"other.sample.svc.cluster.local", "xhelloworld.sample.svc.cluster.local"}},
		{name: "wildcard", yaml: fmt.Sprintf(entry, "true", `["*.ns.svc.cluster.local"]`),
			local:  []string{"a.ns.svc.cluster.local", "b.ns.svc.cluster.local"},
			remote: []string{"a.ns2.svc.cluster.local", "ns.svc.cluster.local", "a.xns.svc.cluster.local"}},
		{name: "all", yaml: fmt.Sprintf(entry, "true", `["*"]`), local: []string{"a.b.svc.cluster.local", "x"}},
		{name: "not cluster-local", yaml: fmt.Sprintf(entry, "false", `["*"]`), remote: []string{"a.b.svc.cluster.local"}},
		{name: "settings absent", yaml: "serviceSettings: [{hosts: [a.b.svc.cluster.local]}]", remote: []string{"a.b.svc.cluster.local"}},
		{name: "bad host", yaml: fmt.Sprintf(entry, "true", `["ok.svc", "Not_A_Host"]`), err: "serviceSettings[0].hosts[1]"},
		{name: "bad host in a non-local entry", yaml: fmt.Sprintf(entry, "false", `["a.*.svc"]`), err: "serviceSettings[0].hosts[0]"},
		{name: "no hosts", yaml: "serviceSettings: [{settings: {clusterLocal: true}}]", err: "serviceSettings[0].hosts: Required"},
		{name: "too many hosts", yaml: fmt.Sprintf(entry, "true", "["+strings.Repeat("a.b,", network.MaxServiceSettingsHosts)+"a.b]"),
			err: "serviceSettings.hosts: Too many: 1001"},
		{name: "wrong type", yaml: fmt.Sprintf(entry, `"yes"`, `["*"]`), err: "parse mesh config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc, err := network.ParseMeshConfig([]byte(tc.yaml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range tc.local {
				if !mc.ClusterLocal.Matches(h) {
					t.Errorf("%s is not cluster-local under %s", h, mc.ClusterLocal)
				}
			}
			for _, h := range tc.remote {
				if mc.ClusterLocal.Matches(h) {
					t.Errorf("%s is cluster-local under %s", h, mc.ClusterLocal)
				}
			}
		})
	}
}

func TestClusterLocalHostsEqual(t *testing.T) {
	parse := func(y string) *network.ClusterLocalHosts {
		t.Helper()
		mc, err := network.ParseMeshConfig([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return mc.ClusterLocal
	}
	a := parse("serviceSettings: [{settings: {clusterLocal: true}, hosts: [a.ns.svc, '*.b.svc']}]")
	b := parse("serviceSettings: [{settings: {clusterLocal: true}, hosts: ['*.b.svc', A.ns.svc]}]")
	c := parse("serviceSettings: [{settings: {clusterLocal: true}, hosts: [a.ns.svc]}]")
	if !a.Equal(b) || a.Equal(c) || a.Equal(nil) || !parse("").Equal(nil) {
		t.Errorf("Equal: %s %s %s", a, b, c)
	}
}

// TestClusterLocalHostsWithSuffix: MCS mode makes every host under the domain
// suffix cluster-local, on top of the mesh config's, and not the clusterset hosts.
func TestClusterLocalHostsWithSuffix(t *testing.T) {
	mc, err := network.ParseMeshConfig([]byte("serviceSettings: [{settings: {clusterLocal: true}, hosts: [a.ns.example.com]}]"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   *network.ClusterLocalHosts
		want map[string]bool
	}{
		{name: "no mesh config", in: nil, want: map[string]bool{
			"helloworld.sample.svc.cluster.local": true, "HelloWorld.Sample.svc.Cluster.Local": true,
			"helloworld.sample.svc.clusterset.local": false, "a.ns.example.com": false, "svc.cluster.local": false,
		}},
		{name: "with the mesh config's", in: mc.ClusterLocal, want: map[string]bool{
			"helloworld.sample.svc.cluster.local": true, "a.ns.example.com": true,
			"helloworld.sample.svc.clusterset.local": false,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.WithSuffix("svc.cluster.local")
			for host, want := range tc.want {
				if got.Matches(host) != want {
					t.Errorf("%s Matches(%q) = %v, want %v", got, host, !want, want)
				}
			}
			if !got.Equal(tc.in.WithSuffix("svc.cluster.local")) || got.Equal(tc.in) {
				t.Errorf("Equal: %s vs %s", got, tc.in)
			}
		})
	}
	if mc.ClusterLocal.Matches("helloworld.sample.svc.cluster.local") {
		t.Error("WithSuffix changed its receiver")
	}
}
