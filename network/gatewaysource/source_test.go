package gatewaysource_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/util/connrotation"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network/gatewaysource"
)

var cluster *kubetest.Cluster

func TestMain(m *testing.M) {
	kubetest.Main(m, func(_ *kubetest.Environment, cs []*kubetest.Cluster) { cluster = cs[0] }, "gateways")
}

func start(t *testing.T, retry time.Duration) (*gatewaysource.Source, chan struct{}) {
	t.Helper()
	changed := make(chan struct{}, 100)
	// The Source's clients dial through a dialer the test closes afterwards, so that
	// pooled connections do not count as leaks.
	cfg := rest.CopyConfig(cluster.Config)
	dialer := connrotation.NewDialer((&net.Dialer{}).DialContext)
	cfg.Dial = dialer.DialContext
	t.Cleanup(dialer.CloseAll)
	src, err := gatewaysource.New(gatewaysource.Options{
		Dynamic:   dynamic.NewForConfigOrDie(cfg),
		Discovery: discovery.NewDiscoveryClientForConfigOrDie(cfg),
		Retry:     retry,
		Logger:    slog.New(slog.DiscardHandler),
		OnChange:  func() { changed <- struct{}{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return src, changed
}

// TestGatewayResources installs the CRD shipped in examples/ while a Source waits
// for it, then applies the reference scenario's Gateway and edits it.
func TestGatewayResources(t *testing.T) {
	// Registered first, so it runs after the Source has stopped. The clients (and
	// their pooled connections) belong to the test, not to the Source.
	baseline := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, baseline) })
	ctx := t.Context()
	src, _ := start(t, 200*time.Millisecond)
	kubetest.Eventually(t, 10*time.Second, func() error {
		if !src.HasSynced() {
			return fmt.Errorf("not synced without the CRD")
		}
		return nil
	})
	if got := src.Servers(); len(got) != 0 {
		t.Fatalf("servers before the CRD: %+v", got)
	}

	if err := kubetest.ApplyFile(ctx, cluster.Config, "../../examples/gateway-crd.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"istio-system", "sample"} {
		if err := kubetest.EnsureNamespace(ctx, cluster.Client, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := kubetest.ApplyFile(ctx, cluster.Config, "../../examples/cross-network-gateway.yaml"); err != nil {
		t.Fatal(err)
	}
	want := []gatewaysource.Server{{
		Gateway: "sample/helloworld-gateway", Selector: map[string]string{"istio": "ingressgateway"},
		Port: 443, Hosts: []string{"*"},
	}}
	kubetest.Eventually(t, 15*time.Second, func() error {
		if got := src.Servers(); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("servers = %+v", got)
		}
		return nil
	})

	// A v1alpha3 Gateway with a passthrough server and a plain TLS one; and one whose
	// port is invalid, which is reported and skipped.
	if err := kubetest.Apply(ctx, cluster.Config, []byte(`
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: mixed, namespace: istio-system}
spec:
  selector: {app: eastwest}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["sample/*", "./*"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: cert}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: broken, namespace: default}
spec:
  servers:
  - port: {number: 70000, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*"]
`)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dyn := dynamic.NewForConfigOrDie(cluster.Config)
		gvr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "gateways"}
		_ = dyn.Resource(gvr).Namespace("istio-system").Delete(context.Background(), "mixed", metav1.DeleteOptions{})
		_ = dyn.Resource(gvr).Namespace("default").Delete(context.Background(), "broken", metav1.DeleteOptions{})
		crd := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
		_ = dyn.Resource(crd).Delete(context.Background(), "gateways.networking.istio.io", metav1.DeleteOptions{})
		kubetest.Eventually(t, 30*time.Second, func() error {
			if _, err := dyn.Resource(crd).Get(context.Background(), "gateways.networking.istio.io", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("CRD not gone yet: %v", err)
			}
			return nil
		})
	})
	want = append([]gatewaysource.Server{{
		Gateway: "istio-system/mixed", Selector: map[string]string{"app": "eastwest"}, Port: 15443, Hosts: []string{"sample/*", "./*"},
	}}, want...)
	kubetest.Eventually(t, 15*time.Second, func() error {
		if got := src.Servers(); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("servers = %+v", got)
		}
		if p := src.Problems(); len(p) != 1 || p[0] != "gateway default/broken: servers[0].port.number: must be 1-65535, got 70000" {
			return fmt.Errorf("problems = %q", p)
		}
		return nil
	})

	dyn := dynamic.NewForConfigOrDie(cluster.Config)
	gvr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "gateways"}
	if err := dyn.Resource(gvr).Namespace("sample").Delete(ctx, "helloworld-gateway", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 15*time.Second, func() error {
		if got := src.Servers(); !reflect.DeepEqual(got, want[:1]) {
			return fmt.Errorf("servers after delete = %+v", got)
		}
		return nil
	})
}

// TestUnlistableResourceDoesNotHoldReadiness: discovery says the Gateway resource is
// served but the server cannot list it (a CRD being removed). The source reports
// synced after its SyncTimeout instead of holding readiness forever.
func TestUnlistableResourceDoesNotHoldReadiness(t *testing.T) {
	disc := &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}
	disc.Resources = []*metav1.APIResourceList{{
		GroupVersion: "networking.istio.io/v1",
		APIResources: []metav1.APIResource{{Name: "gateways", Namespaced: true, Kind: "Gateway"}},
	}}
	src, err := gatewaysource.New(gatewaysource.Options{
		Dynamic:     dynamic.NewForConfigOrDie(cluster.Config),
		Discovery:   disc,
		SyncTimeout: 500 * time.Millisecond,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	kubetest.Eventually(t, 10*time.Second, func() error {
		if !src.HasSynced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	if got := src.Servers(); len(got) != 0 {
		t.Fatalf("servers = %+v", got)
	}
}
