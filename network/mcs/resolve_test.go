package mcs

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/horizon-mesh/horizon/network"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func tcp(name string, port int32) Port { return Port{Name: name, Port: port, Protocol: "TCP"} }

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name    string
		exports []Export
		want    Resolution
	}{
		{name: "no export", want: Resolution{}},
		{
			name:    "one export",
			exports: []Export{{Cluster: "c1", Created: t0, Ports: []Port{{Name: "http", Port: 5000}}}},
			want:    Resolution{Ports: []Port{tcp("http", 5000)}, Oldest: "c1", Order: []network.ClusterID{"c1"}},
		},
		{
			name: "identical exports",
			exports: []Export{
				{Cluster: "c2", Created: t0.Add(time.Hour), Ports: []Port{tcp("http", 5000)}},
				{Cluster: "c1", Created: t0, Ports: []Port{tcp("http", 5000)}},
			},
			want: Resolution{Ports: []Port{tcp("http", 5000)}, Oldest: "c1", Order: []network.ClusterID{"c1", "c2"}},
		},
		{
			name: "distinct ports are a union",
			exports: []Export{
				{Cluster: "c1", Created: t0, Ports: []Port{tcp("http", 5000)}},
				{Cluster: "c2", Created: t0.Add(time.Hour), Ports: []Port{tcp("grpc", 9000), tcp("http", 5000)}},
			},
			want: Resolution{Ports: []Port{tcp("http", 5000), tcp("grpc", 9000)}, Oldest: "c1", Order: []network.ClusterID{"c1", "c2"}},
		},
		{
			name: "same name, other number: the oldest wins",
			exports: []Export{
				{Cluster: "c1", Created: t0.Add(time.Hour), Ports: []Port{tcp("http", 8080)}},
				{Cluster: "c2", Created: t0, Ports: []Port{tcp("http", 5000)}},
			},
			want: Resolution{
				Ports: []Port{tcp("http", 5000)}, Oldest: "c2", Order: []network.ClusterID{"c2", "c1"},
				Conflicts: []Conflict{{Cluster: "c1", Reason: ReasonPortConflict, Property: `port "http"`, Value: "8080/TCP", Winner: "c2", WinnerValue: "5000/TCP"}},
			},
		},
		{
			name: "same name, other protocol",
			exports: []Export{
				{Cluster: "c1", Created: t0, Ports: []Port{tcp("dns", 53)}},
				{Cluster: "c2", Created: t0.Add(time.Second), Ports: []Port{{Name: "dns", Port: 53, Protocol: "UDP"}}},
			},
			want: Resolution{
				Ports: []Port{tcp("dns", 53)}, Oldest: "c1", Order: []network.ClusterID{"c1", "c2"},
				Conflicts: []Conflict{{Cluster: "c2", Reason: ReasonPortConflict, Property: `port "dns"`, Value: "53/UDP", Winner: "c1", WinnerValue: "53/TCP"}},
			},
		},
		{
			name: "same number and protocol, other name",
			exports: []Export{
				{Cluster: "c1", Created: t0, Ports: []Port{tcp("http", 5000)}},
				{Cluster: "c2", Created: t0.Add(time.Second), Ports: []Port{tcp("web", 5000), tcp("", 6000)}},
			},
			want: Resolution{
				Ports: []Port{tcp("http", 5000), tcp("", 6000)}, Oldest: "c1", Order: []network.ClusterID{"c1", "c2"},
				Conflicts: []Conflict{{Cluster: "c2", Reason: ReasonPortConflict, Property: "port 5000/TCP", Value: `port "web"`, Winner: "c1", WinnerValue: `port "http"`}},
			},
		},
		{
			name: "same number, other protocol: both kept",
			exports: []Export{
				{Cluster: "c1", Created: t0, Ports: []Port{tcp("dns-tcp", 53)}},
				{Cluster: "c2", Created: t0.Add(time.Second), Ports: []Port{{Name: "dns-udp", Port: 53, Protocol: "UDP"}}},
			},
			want: Resolution{
				Ports: []Port{tcp("dns-tcp", 53), {Name: "dns-udp", Port: 53, Protocol: "UDP"}}, Oldest: "c1", Order: []network.ClusterID{"c1", "c2"},
			},
		},
		{
			name: "a tie goes to the lower cluster ID",
			exports: []Export{
				{Cluster: "cluster2", Created: t0, Ports: []Port{tcp("http", 5001)}},
				{Cluster: "cluster1", Created: t0, Ports: []Port{tcp("http", 5000)}},
			},
			want: Resolution{
				Ports: []Port{tcp("http", 5000)}, Oldest: "cluster1", Order: []network.ClusterID{"cluster1", "cluster2"},
				Conflicts: []Conflict{{Cluster: "cluster2", Reason: ReasonPortConflict, Property: `port "http"`, Value: "5001/TCP", Winner: "cluster1", WinnerValue: "5000/TCP"}},
			},
		},
		{
			name: "a port merged from a newer export beats a still newer one",
			exports: []Export{
				{Cluster: "c1", Created: t0, Ports: []Port{tcp("http", 5000)}},
				{Cluster: "c2", Created: t0.Add(time.Second), Ports: []Port{tcp("http", 5000), tcp("grpc", 9000)}},
				{Cluster: "c3", Created: t0.Add(2 * time.Second), Ports: []Port{tcp("grpc", 9001)}},
			},
			want: Resolution{
				Ports: []Port{tcp("http", 5000), tcp("grpc", 9000)}, Oldest: "c1", Order: []network.ClusterID{"c1", "c2", "c3"},
				Conflicts: []Conflict{{Cluster: "c3", Reason: ReasonPortConflict, Property: `port "grpc"`, Value: "9001/TCP", Winner: "c2", WinnerValue: "9000/TCP"}},
			},
		},
		{
			name: "headless against ClusterSetIP",
			exports: []Export{
				{Cluster: "c1", Created: t0, Ports: []Port{tcp("http", 5000)}},
				{Cluster: "c2", Created: t0.Add(time.Second), Headless: true, Ports: []Port{tcp("http", 5000)}},
			},
			want: Resolution{
				Ports: []Port{tcp("http", 5000)}, Oldest: "c1", Order: []network.ClusterID{"c1", "c2"},
				Conflicts: []Conflict{{Cluster: "c2", Reason: ReasonTypeConflict, Property: "type", Value: "Headless", Winner: "c1", WinnerValue: "ClusterSetIP"}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := fmt.Sprint(tc.exports)
			got := Resolve(tc.exports)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Resolve =\n%+v\nwant\n%+v", got, tc.want)
			}
			if fmt.Sprint(tc.exports) != in {
				t.Error("Resolve modified its input")
			}
			// The order of the input does not matter.
			rev := make([]Export, len(tc.exports))
			for i, e := range tc.exports {
				rev[len(rev)-1-i] = e
			}
			if r := Resolve(rev); !reflect.DeepEqual(r, got) {
				t.Errorf("Resolve of the reversed input =\n%+v\nwant\n%+v", r, got)
			}
		})
	}
}

func TestConditionFor(t *testing.T) {
	conflicted := Resolve([]Export{
		{Cluster: "cluster1", Created: t0, Ports: []Port{tcp("http", 5000)}},
		{Cluster: "cluster2", Created: t0.Add(time.Minute), Ports: []Port{tcp("http", 5001)}},
		{Cluster: "cluster3", Created: t0.Add(2 * time.Minute), Ports: []Port{tcp("http", 5000)}},
	})
	for _, tc := range []struct {
		name    string
		res     Resolution
		cluster network.ClusterID
		want    Condition
	}{
		{
			name: "no conflict", res: Resolve([]Export{{Cluster: "c1", Created: t0}}), cluster: "c1",
			want: Condition{Reason: "NoConflicts", Message: "no conflicting exports of this service"},
		},
		{
			name: "the newer export", res: conflicted, cluster: "cluster2",
			want: Condition{Conflict: true, Reason: "PortConflict",
				Message: `port "http" is 5001/TCP here but 5000/TCP in the older export of cluster cluster1, which is used`},
		},
		{
			name: "the winner", res: conflicted, cluster: "cluster1",
			want: Condition{Conflict: true, Reason: "PortConflict",
				Message: `port "http" is 5001/TCP in cluster cluster2; this export's 5000/TCP is used`},
		},
		{
			name: "an export that agrees with the winner", res: conflicted, cluster: "cluster3",
			want: Condition{Conflict: true, Reason: "PortConflict",
				Message: "the exports of cluster(s) cluster2 conflict with older exports; the oldest export, in cluster cluster1, wins"},
		},
		{
			name: "reasons joined",
			res: Resolve([]Export{
				{Cluster: "c1", Created: t0, Ports: []Port{tcp("http", 5000)}},
				{Cluster: "c2", Created: t0.Add(time.Second), Headless: true, Ports: []Port{tcp("http", 5001)}},
			}),
			cluster: "c2",
			want: Condition{Conflict: true, Reason: "PortConflict,TypeConflict",
				Message: `port "http" is 5001/TCP here but 5000/TCP in the older export of cluster c1, which is used; type is Headless here but ClusterSetIP in the older export of cluster c1, which is used`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.res.ConditionFor(tc.cluster); got != tc.want {
				t.Errorf("ConditionFor(%s) =\n%+v\nwant\n%+v", tc.cluster, got, tc.want)
			}
		})
	}
}

// TestConditionMessageBounded: an export with many conflicting ports names a few,
// counts the rest, and its message stays within MaxMessageBytes.
func TestConditionMessageBounded(t *testing.T) {
	var old, cur []Port
	for i := range int32(200) {
		name := strings.Repeat("p", 10) + fmt.Sprint(i)
		old = append(old, tcp(name, 1000+i))
		cur = append(cur, tcp(name, 3000+i))
	}
	res := Resolve([]Export{{Cluster: "c1", Created: t0, Ports: old}, {Cluster: "c2", Created: t0.Add(time.Second), Ports: cur}})
	if len(res.Conflicts) != 200 {
		t.Fatalf("conflicts = %d, want 200", len(res.Conflicts))
	}
	c := res.ConditionFor("c2")
	if len(c.Message) > MaxMessageBytes || !strings.Contains(c.Message, "and 196 more") {
		t.Errorf("message (%d bytes) = %q, want at most %d bytes ending in a count", len(c.Message), c.Message, MaxMessageBytes)
	}
	if got := truncate(strings.Repeat("é", 600), 11); got != "éééé…" {
		t.Errorf("truncate = %q, want whole runes and an ellipsis", got)
	}
}
