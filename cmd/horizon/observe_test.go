package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestObservability runs horizon serve with a good, an unreachable and a rejected
// remote cluster and a connected proxy, then reads /metrics, every debug endpoint
// and `horizon status` as an operator would. No token — the remote secrets', or the
// config cluster's — may appear in any of them or in the logs.
func TestObservability(t *testing.T) {
	ctx := t.Context()
	err := kubetest.Deploy(ctx, cluster2.Client, kubetest.Service{
		Namespace: "observe", Name: "web",
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		Backends: []kubetest.Backend{{Pod: "web-0", IP: "10.2.9.1", Ready: true, Labels: map[string]string{network.LabelTLSMode: network.TLSModeIstio}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	writeMeshNetworks(t, meshNetworks)
	goodToken := writeRemoteSecret(t, "observe-good", cluster2, "cluster2")
	deadTok, err := cluster3.MintToken(ctx, "kube-system", "observe-dead", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	deadKC, err := kubetest.KubeconfigFor("dead", "https://127.0.0.1:1", cluster3.CAData, deadTok.Value)
	if err != nil {
		t.Fatal(err)
	}
	const execToken = "exec-kubeconfig-secret-value-0123456789"
	execKC := []byte(`apiVersion: v1
kind: Config
current-context: c
contexts: [{name: c, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: ` + execToken + `, exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true}}}]
`)
	secrets := cluster1.Client.CoreV1().Secrets("istio-system")
	for name, data := range map[string]map[string][]byte{"observe-dead": {"dead": deadKC}, "observe-exec": {"exec": execKC}} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system",
			Labels: map[string]string{network.LabelMultiCluster: "true"}}, Data: data}
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = secrets.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	xdsAddr, httpAddr, logs := startServe(t, "--remote-cluster-timeout", "2s", "--pprof")
	const proxyID = "sidecar~10.1.0.50~sleep.sample~sample.svc.cluster.local"
	const webCLA = "outbound|80||web.observe.svc.cluster.local"
	proxy := xdstest.Connect(t, xdsAddr, xdstest.Node(proxyID, "network1"), xdstest.Options{CDS: true, EDS: []string{webCLA}})
	kubetest.Eventually(t, 10*time.Second, func() error {
		if got := xdstest.Summary(proxy.CLA(webCLA)); len(got) != 1 {
			return fmt.Errorf("proxy has %q", got)
		}
		return nil
	})

	base := "http://" + httpAddr
	outputs := map[string]string{}
	get := func(path string) string {
		t.Helper()
		var code int
		kubetest.Eventually(t, 10*time.Second, func() error {
			code, outputs[path] = httpGet(t, base+path)
			if code != http.StatusOK {
				return fmt.Errorf("%s: %d %s", path, code, outputs[path])
			}
			return nil
		})
		return outputs[path]
	}

	var clusterz app.ClusterzResponse
	if err := json.Unmarshal([]byte(get("/debug/clusterz")), &clusterz); err != nil {
		t.Fatal(err)
	}
	states := map[network.ClusterID]clusterregistry.SyncState{}
	for _, c := range clusterz.Clusters {
		states[c.ID] = c.State
	}
	if states["cluster1"] != clusterregistry.StateSynced || states["cluster2"] != clusterregistry.StateSynced || states["dead"] != clusterregistry.StateTimedOut {
		t.Errorf("cluster states = %v", states)
	}
	rejected := false
	for _, s := range clusterz.Secrets {
		if s.Secret == "istio-system/observe-exec" && strings.Contains(s.Error, "exec credential plugin") {
			rejected = true
		}
	}
	if !rejected {
		t.Errorf("exec kubeconfig not shown as rejected: %+v", clusterz.Secrets)
	}

	var networkz app.NetworkzResponse
	if err := json.Unmarshal([]byte(get("/debug/networkz")), &networkz); err != nil {
		t.Fatal(err)
	}
	if len(networkz.Gateways) != 2 || networkz.Status.Generation == 0 || !strings.Contains(string(networkz.MeshNetworks), "network2") {
		t.Errorf("networkz = %+v", networkz)
	}

	var endpointz app.EndpointzResponse
	if err := json.Unmarshal([]byte(get("/debug/endpointz?host=web.observe.svc.cluster.local")), &endpointz); err != nil {
		t.Fatal(err)
	}
	if eps := endpointz.Clusters["cluster2"].Endpoints[80]; len(eps) != 1 || eps[0].ResolvedNetwork != "network2" {
		t.Errorf("endpointz cluster2 = %+v", endpointz.Clusters["cluster2"])
	}
	if v := endpointz.Views[80]; strings.Join(v["network1"], ";") != "192.0.2.21:15443 weight 1 locality //;192.0.2.22:15443 weight 1 locality //" ||
		strings.Join(v["network2"], ";") != "10.2.9.1:8080 weight 1 locality //" {
		t.Errorf("endpointz views = %v", v)
	}
	if code, _ := httpGet(t, base+"/debug/endpointz"); code != http.StatusBadRequest {
		t.Errorf("endpointz without host: %d", code)
	}

	kubetest.Eventually(t, 10*time.Second, func() error {
		for _, p := range decodeSyncz(t, get("/debug/syncz")) {
			if p["id"] == proxyID && p["upToDate"] == true && p["network"] == "network1" {
				return nil
			}
		}
		return fmt.Errorf("proxy not up to date in syncz: %s", outputs["/debug/syncz"])
	})
	dump := get("/debug/config_dump?proxy=" + url.QueryEscape(proxyID))
	if !strings.Contains(dump, webCLA) || !strings.Contains(dump, "192.0.2.21") {
		t.Errorf("config_dump lacks the proxy's resources: %.300s", dump)
	}
	if code, _ := httpGet(t, base+"/debug/config_dump?proxy=nobody"); code != http.StatusNotFound {
		t.Errorf("config_dump of an unknown proxy: %d", code)
	}
	get("/debug/pprof/")

	metrics := get("/metrics")
	for _, want := range []string{
		`horizon_clusters{state="synced"} 2`,
		`horizon_clusters{state="timed-out"} 1`,
		`horizon_cluster_sync_timed_out{cluster="dead"} 1`,
		`horizon_cluster_sync_duration_seconds{cluster="cluster2"}`,
		`horizon_remote_secret_events_total{outcome="rejected"}`,
		`horizon_remote_secret_keys{outcome="accepted"}`,
		`horizon_xds_connections{network="network1",type="ads"} 1`,
		`horizon_xds_pushes_total`,
		`horizon_xds_push_latency_seconds_bucket`,
		`horizon_xds_debounce_seconds_count`,
		`horizon_xds_build_seconds_count`,
		`horizon_xds_cache_misses_total`,
		`horizon_mesh_networks_reloads_total 1`,
		`horizon_mesh_networks_rejections_total 0`,
		`horizon_remote_api_requests_total{cluster="cluster2",code="2xx",verb="list"}`,
		`horizon_remote_api_requests_total{cluster="cluster2",code="2xx",verb="watch"}`,
		`horizon_remote_api_requests_total{cluster="dead",code="error",verb="list"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// horizon status: tables, JSON, and a non-zero exit for the timed-out cluster.
	var out bytes.Buffer
	err = run(ctx, []string{"status", "--address", httpAddr}, &out, &out)
	if !errors.Is(err, errClustersInError) {
		t.Errorf("status with a timed-out cluster: err = %v, want errClustersInError", err)
	}
	table := out.String()
	t.Logf("horizon status:\n%s", table)
	outputs["status"] = table
	for _, want := range []string{"CLUSTERS", "API REQUESTS", "failed)", "cluster2", "synced", "dead", "timed-out", "connection refused",
		"192.0.2.21:15443", "fromRegistry cluster2", "sidecar", "network1", "exec credential plugin"} {
		if !strings.Contains(table, want) {
			t.Errorf("status output lacks %q:\n%s", want, table)
		}
	}
	out.Reset()
	_ = run(ctx, []string{"status", "--address", httpAddr, "-o", "json"}, &out, &out)
	outputs["status -o json"] = out.String()
	var rep statusReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.Clusters) != 3 || len(rep.Proxies) == 0 {
		t.Errorf("status -o json: %v, %+v", err, rep)
	}
	if err := run(ctx, []string{"status", "-o", "yaml"}, &out, &out); !errors.As(err, new(usageError)) {
		t.Errorf("status -o yaml: %v, want a usage error", err)
	}

	outputs["logs"] = logs.String()
	for name, text := range outputs {
		for _, secret := range []string{goodToken, deadTok.Value, execToken, cluster1.Config.BearerToken} {
			if strings.Contains(text, secret) {
				t.Errorf("a token appears in %s", name)
			}
		}
	}
}

func decodeSyncz(t *testing.T, body string) []map[string]any {
	t.Helper()
	var out []map[string]any
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	return out
}
