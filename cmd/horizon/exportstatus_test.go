package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	mcscrd "sigs.k8s.io/mcs-api/config/crd"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/e2e/xdstest"
	"github.com/horizon-mesh/horizon/network"
)

// conflictSetup installs the mcs-api CRDs in cluster1 and cluster2 and deploys
// Service ns/hello in both, on port http 5000 in cluster1 and on port http
// port2 in cluster2, each exported; cluster1's export is the older one.
func conflictSetup(t *testing.T, ns string, port2 int32) {
	t.Helper()
	ctx := t.Context()
	for i, c := range []*kubetest.Cluster{cluster1, cluster2} {
		for _, crd := range [][]byte{mcscrd.ServiceExportCRD, mcscrd.ServiceImportCRD} {
			if err := kubetest.Apply(ctx, c.Config, crd); err != nil {
				t.Fatal(err)
			}
		}
		port := int32(5000)
		if i == 1 {
			port = port2
		}
		err := kubetest.Deploy(ctx, c.Client, helloService(ns, port, fmt.Sprintf("10.%d.77.1", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		conflictExport(t, c, ns)
		// No namespace controller runs here: delete what other tests would see.
		exports := exportClient(t, c, ns)
		t.Cleanup(func() {
			_ = exports.Delete(context.Background(), "hello", metav1.DeleteOptions{})
			_ = c.Client.CoreV1().Services(ns).Delete(context.Background(), "hello", metav1.DeleteOptions{})
			_ = c.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		})
		if i == 0 {
			// creationTimestamp has whole seconds: make cluster2's export the newer
			// one by the clock and not only by the tie-break on cluster IDs.
			created := conflictExportObject(t, c, ns).GetCreationTimestamp()
			kubetest.Eventually(t, 5*time.Second, func() error {
				if !time.Now().After(created.Add(time.Second)) {
					return fmt.Errorf("waiting for the next second")
				}
				return nil
			})
		}
	}
}

func helloService(ns string, port int32, ip string) kubetest.Service {
	return kubetest.Service{
		Namespace: ns, Name: "hello",
		Ports: []corev1.ServicePort{{Name: "http", Port: port, TargetPort: intstr.FromInt32(8080)}},
		Backends: []kubetest.Backend{{Pod: "hello-0", IP: ip, Ready: true,
			Labels: map[string]string{network.LabelTLSMode: network.TLSModeIstio}}},
	}
}

func exportClient(t *testing.T, c *kubetest.Cluster, ns string) dynamic.ResourceInterface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return dyn.Resource(clusterregistry.ServiceExportResource).Namespace(ns)
}

// conflictExport creates the ServiceExport ns/hello in c.
func conflictExport(t *testing.T, c *kubetest.Cluster, ns string) {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
		"metadata": map[string]any{"name": "hello", "namespace": ns},
	}}
	// A CRD just installed may take a moment to be served.
	kubetest.Eventually(t, 20*time.Second, func() error {
		_, err := exportClient(t, c, ns).Create(t.Context(), obj, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

func conflictExportObject(t *testing.T, c *kubetest.Cluster, ns string) *unstructured.Unstructured {
	t.Helper()
	obj, err := exportClient(t, c, ns).Get(t.Context(), "hello", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// conflictCondition returns the Conflict condition of ServiceExport ns/hello in c,
// as "status reason: message", and how many conditions the export has.
func conflictCondition(t *testing.T, c *kubetest.Cluster, ns string) (string, int) {
	t.Helper()
	conds, _, _ := unstructured.NestedSlice(conflictExportObject(t, c, ns).Object, "status", "conditions")
	for _, raw := range conds {
		m, _ := raw.(map[string]any)
		if m["type"] == "Conflict" {
			return fmt.Sprintf("%v %v: %v", m["status"], m["reason"], m["message"]), len(conds)
		}
	}
	return "", len(conds)
}

// grantExportStatus gives the reader identity of c the opt-in rule of
// examples/mcs-export-status-rbac.yaml: patch on serviceexports/status.
func grantExportStatus(t *testing.T, c *kubetest.Cluster) {
	t.Helper()
	ctx := t.Context()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "horizon-export-status-test"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceexports/status"}, Verbs: []string{"patch"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "horizon-export-status-test"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "horizon-reader", Namespace: "kube-system"}}}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
		_ = c.Client.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
}

// metricValue returns the value of the series of name with labels (`{…}` as
// Prometheus prints it, or ""), or -1 when there is none.
func metricValue(t *testing.T, httpAddr, series string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+httpAddr+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	var v float64
	fmt.Sscan(m[1], &v)
	return v
}

// TestMCSExportConflict: cluster1 and cluster2 export hello with port http on
// different numbers. With --mcs-export-status, both exports get a Conflict
// condition (True, PortConflict) naming the port and the older export's cluster,
// the metric and `horizon status` show it, and proxies get the clusterset host on
// the older export's port only, with both clusters' endpoints. A write the remote
// cluster refuses (no RBAC yet) is counted and retried, and serving goes on; once
// the rule is granted it lands. When cluster2's port is changed to agree, the
// conditions turn False and the metric drops to 0.
func TestMCSExportConflict(t *testing.T) {
	const ns = "mcs-conflict"
	conflictSetup(t, ns, 5001)
	writeMeshNetworks(t, meshNetworks)
	writeRemoteSecret(t, "mcs-conflict-remote", cluster2, "cluster2")
	xdsAddr, httpAddr, _ := startServe(t, "--mcs", "--mcs-export-status")

	// cluster1 (an administrator's credentials) is written; cluster2's reader may not.
	kubetest.Eventually(t, 20*time.Second, func() error {
		got, _ := conflictCondition(t, cluster1, ns)
		if want := `True PortConflict: port "http" is 5001/TCP in cluster cluster2; this export's 5000/TCP is used`; got != want {
			return fmt.Errorf("cluster1's export: Conflict %q, want %q", got, want)
		}
		if v := metricValue(t, httpAddr, `horizon_mcs_export_status_writes_total{outcome="failed"}`); v < 1 {
			return fmt.Errorf("failed writes = %v, want cluster2's refused write counted", v)
		}
		return nil
	})
	if got, n := conflictCondition(t, cluster2, ns); got != "" || n != 0 {
		t.Fatalf("cluster2's export has %d conditions (Conflict %q) without the RBAC to write them", n, got)
	}
	if code, body := httpGet(t, "http://"+httpAddr+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d %s after a refused write, want still ready", code, body)
	}

	grantExportStatus(t, cluster2)
	kubetest.Eventually(t, 90*time.Second, func() error {
		got, _ := conflictCondition(t, cluster2, ns)
		if want := `True PortConflict: port "http" is 5001/TCP here but 5000/TCP in the older export of cluster cluster1, which is used`; got != want {
			return fmt.Errorf("cluster2's export: Conflict %q, want %q", got, want)
		}
		return nil
	})
	if v := metricValue(t, httpAddr, `horizon_mcs_export_conflicts{reason="PortConflict"}`); v != 1 {
		t.Errorf(`horizon_mcs_export_conflicts{reason="PortConflict"} = %v, want 1`, v)
	}
	var mcsz app.MCSzResponse
	_, body := httpGet(t, "http://"+httpAddr+"/debug/mcsz")
	if err := json.Unmarshal([]byte(body), &mcsz); err != nil {
		t.Fatal(err)
	}
	if !mcsz.Enabled || mcsz.Conflicted != 1 || len(mcsz.Services) != 1 || mcsz.Services[0].Oldest != "cluster1" ||
		len(mcsz.Services[0].Conflicts) != 1 || mcsz.Services[0].Conflicts[0].Cluster != "cluster2" {
		t.Errorf("/debug/mcsz = %s, want hello's conflict, cluster2's export losing to cluster1's", body)
	}
	var out strings.Builder
	_ = run(t.Context(), []string{"status", "--address", httpAddr}, &out, &out)
	if !regexp.MustCompile(`mcs-conflict/hello\s+cluster2\s+PortConflict\s+port "http"\s+5001/TCP\s+5000/TCP \(cluster1\)`).MatchString(out.String()) {
		t.Errorf("horizon status does not list the conflict:\n%s", out.String())
	}

	// Proxies get the clusterset service on the older export's port only, with
	// both clusters' endpoints (cluster2's through network2's gateways).
	const host = "hello." + ns + ".svc.clusterset.local"
	cla5000, cla5001 := "outbound|5000||"+host, "outbound|5001||"+host
	proxy := xdstest.Connect(t, xdsAddr, xdstest.Node("sidecar~10.1.0.60~sleep.sample~sample.svc.cluster.local", "network1"),
		xdstest.Options{CDS: true, EDS: []string{cla5000, cla5001}})
	kubetest.Eventually(t, 10*time.Second, func() error {
		got := strings.Join(xdstest.Summary(proxy.CLA(cla5000)), " ")
		if !strings.Contains(got, "10.1.77.1:8080") || !strings.Contains(got, "192.0.2.21:15443") {
			return fmt.Errorf("%s: %q, want cluster1's pod and network2's gateways", cla5000, got)
		}
		for _, name := range proxy.Names(xdstest.TypeCluster) {
			if name == cla5001 {
				return fmt.Errorf("CDS has %s, the port that lost the conflict", name)
			}
		}
		return nil
	})

	// Resolved: cluster2's Service takes port 5000 too.
	if err := kubetest.Deploy(t.Context(), cluster2.Client, helloService(ns, 5000, "10.2.77.1")); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 20*time.Second, func() error {
		for _, c := range []*kubetest.Cluster{cluster1, cluster2} {
			if got, _ := conflictCondition(t, c, ns); got != "False NoConflicts: no conflicting exports of this service" {
				return fmt.Errorf("%s's export: Conflict %q, want False", c.Name, got)
			}
		}
		if v := metricValue(t, httpAddr, `horizon_mcs_export_conflicts{reason="PortConflict"}`); v != 0 {
			return fmt.Errorf(`horizon_mcs_export_conflicts{reason="PortConflict"} = %v, want 0`, v)
		}
		return nil
	})
}

// TestMCSExportConflictNoStatusWrites: without --mcs-export-status, a conflict is
// reported (metric, /debug/mcsz) but no ServiceExport is written, even where
// Horizon could.
func TestMCSExportConflictNoStatusWrites(t *testing.T) {
	const ns = "mcs-conflict-quiet"
	conflictSetup(t, ns, 5001)
	grantExportStatus(t, cluster2)
	writeMeshNetworks(t, meshNetworks)
	writeRemoteSecret(t, "mcs-conflict-quiet-remote", cluster2, "cluster2")
	_, httpAddr, _ := startServe(t, "--mcs")
	kubetest.Eventually(t, 20*time.Second, func() error {
		if v := metricValue(t, httpAddr, `horizon_mcs_export_conflicts{reason="PortConflict"}`); v != 1 {
			return fmt.Errorf(`horizon_mcs_export_conflicts{reason="PortConflict"} = %v, want 1`, v)
		}
		return nil
	})
	kubetest.Consistently(t, 2*time.Second, func() error {
		for _, c := range []*kubetest.Cluster{cluster1, cluster2} {
			if got, n := conflictCondition(t, c, ns); n != 0 {
				return fmt.Errorf("%s's export has %d conditions (Conflict %q) without --mcs-export-status", c.Name, n, got)
			}
		}
		return nil
	})
	if v := metricValue(t, httpAddr, `horizon_mcs_export_status_writes_total{outcome="ok"}`); v != 0 {
		t.Errorf("status writes = %v without --mcs-export-status, want 0", v)
	}

	// cluster2's Service made headless, on the agreed port: a type conflict only.
	svcs := cluster2.Client.CoreV1().Services(ns)
	if err := svcs.Delete(t.Context(), "hello", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: ns},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "hello"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 5000, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := svcs.Create(t.Context(), headless, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 20*time.Second, func() error {
		port := metricValue(t, httpAddr, `horizon_mcs_export_conflicts{reason="PortConflict"}`)
		typ := metricValue(t, httpAddr, `horizon_mcs_export_conflicts{reason="TypeConflict"}`)
		if port != 0 || typ != 1 {
			return fmt.Errorf("export conflicts: PortConflict %v, TypeConflict %v; want 0 and 1", port, typ)
		}
		return nil
	})
}
