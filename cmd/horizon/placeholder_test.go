package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
)

// TestPlaceholderGatewayIsReported: meshNetworks with the documented placeholder
// gateway 0.0.0.0 is accepted, and the log, /debug/networkz and `horizon status` say
// that the network's endpoints are unreachable until its address is set; once set, the
// note is gone.
func TestPlaceholderGatewayIsReported(t *testing.T) {
	const note = "network2: gateway address not set yet; its endpoints are unreachable from other networks"
	writeMeshNetworks(t, `
networks:
  network2:
    endpoints: [{fromRegistry: remote_kubecfg}]
    gateways: [{address: 0.0.0.0, port: 443}]
`)
	_, httpAddr, logs := startServe(t)

	networkz := func() app.NetworkzResponse {
		t.Helper()
		code, body := httpGet(t, "http://"+httpAddr+"/debug/networkz")
		var rep app.NetworkzResponse
		if code != 200 {
			t.Fatalf("/debug/networkz: %d %s", code, body)
		}
		if err := json.Unmarshal([]byte(body), &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := networkz(); len(rep.Notes) != 1 || rep.Notes[0] != note || len(rep.Gateways) != 0 {
		t.Errorf("networkz notes %q, gateways %v; want the note and no gateway", rep.Notes, rep.Gateways)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"status", "--address", httpAddr}, &out, &out); err != nil {
		t.Fatalf("status: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), note) {
		t.Errorf("horizon status lacks %q:\n%s", note, out.String())
	}
	if l := logs.String(); !strings.Contains(l, "gateway address not set yet") || !strings.Contains(l, "network=network2") {
		t.Errorf("log does not say network2's gateway is not set:\n%s", l)
	}

	writeMeshNetworks(t, `
networks:
  network2:
    endpoints: [{fromRegistry: remote_kubecfg}]
    gateways: [{address: 192.0.2.20, port: 443}]
`)
	kubetest.Eventually(t, 10*time.Second, func() error {
		if rep := networkz(); len(rep.Notes) != 0 || len(rep.Gateways) != 1 {
			return fmt.Errorf("notes %q, gateways %v after the address was set", rep.Notes, rep.Gateways)
		}
		return nil
	})
}
