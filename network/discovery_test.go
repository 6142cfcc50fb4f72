package network_test

import (
	"strings"
	"testing"

	"github.com/horizon-mesh/horizon/network"
)

func TestParseDiscoverySelectors(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    string // String() of the result
		wantErr string
	}{
		{name: "yaml list", value: "- matchLabels: {env: prod}\n- matchExpressions: [{key: team, operator: Exists}]\n", want: "env=prod | team"},
		{name: "json list", value: `[{"matchLabels":{"env":"prod"}}]`, want: "env=prod"},
		{name: "empty list selects every namespace", value: "[]", want: "*"},
		{name: "empty value selects every namespace", value: "", want: "*"},
		{name: "not a list", value: "matchLabels: {env: prod}", wantErr: "metadata.annotations[horizon.io/discovery-selectors]: want a list of label selectors"},
		{name: "unknown field", value: "- matchLabel: {env: prod}", wantErr: `unknown field "matchLabel"`},
		{name: "bad operator", value: "- matchExpressions: [{key: team, operator: Near}]", wantErr: "metadata.annotations[horizon.io/discovery-selectors][0].matchExpressions[0].operator"},
		{name: "bad label value", value: "- matchLabels: {env: 'a b'}", wantErr: "metadata.annotations[horizon.io/discovery-selectors][0].matchLabels"},
		{name: "too many", value: "[" + strings.Repeat("{},", network.MaxDiscoverySelectors) + "{}]", wantErr: "must have at most 64 items"},
		{name: "too long", value: strings.Repeat(" ", network.MaxDiscoverySelectorsBytes+1), wantErr: "may not be more than 16384 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := network.ParseDiscoverySelectors(tc.value)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Errorf("selectors %q, want %q", got.String(), tc.want)
			}
		})
	}
}

func TestParseMeshConfig(t *testing.T) {
	mc, err := network.ParseMeshConfig([]byte("enableTracing: true\nsomeFutureField: 1\ndiscoverySelectors:\n- matchLabels: {env: prod}\n"))
	if err != nil {
		t.Fatal(err)
	}
	sel := mc.DiscoverySelectors
	if !sel.Selects(map[string]string{"env": "prod"}) || sel.Selects(map[string]string{"env": "dev"}) || sel.Selects(nil) {
		t.Errorf("selectors %s do not select as written", sel)
	}
	if mc, err := network.ParseMeshConfig(nil); err != nil || !mc.DiscoverySelectors.All() {
		t.Errorf("empty mesh config: %v, %v; want every namespace", mc, err)
	}
	if _, err := network.ParseMeshConfig([]byte("enableTracing: maybe\n")); err == nil || !strings.Contains(err.Error(), "parse mesh config") {
		t.Errorf("a field of the wrong type: error %v", err)
	}
}
