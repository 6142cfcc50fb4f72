package secrets_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/secrets"
)

func newController(t *testing.T, client *fake.Clientset, handler *recorder) *secrets.Controller {
	t.Helper()
	ctrl, err := secrets.New(secrets.Options{
		Client:    client,
		Handler:   handler,
		Namespace: namespace,
		ClusterID: configID,
		Logger:    slog.New(&sinkHandler{sink: &logSink{}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	handler.synced = ctrl.HasSynced
	return ctrl
}

// TestNewStartsNothing: a controller that is built but never run (the caller failed
// before Run) leaves no goroutine behind.
func TestNewStartsNothing(t *testing.T) {
	newController(t, fake.NewClientset(), &recorder{})
	goleak.VerifyNone(t)
}

// TestRunStopsBeforeSecretsListed: while the config cluster cannot list Secrets the
// controller does not report synced and tells the handler nothing; when its context
// ends, Run returns with every goroutine joined.
func TestRunStopsBeforeSecretsListed(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	client := fake.NewClientset(remoteSecret("a", kv{"c1": remoteA.kubeconfig}))
	var lists atomic.Int32
	client.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		lists.Add(1)
		return true, nil, errors.New("config cluster unavailable")
	})
	handler := &recorder{}
	ctrl := newController(t, client, handler)
	ctx, cancel := context.WithCancel(t.Context())
	done := runController(t, ctx, ctrl)
	kubetest.Eventually(t, timeout, func() error {
		if n := lists.Load(); n < 2 {
			return fmt.Errorf("%d attempts to list Secrets, want a retry", n)
		}
		return nil
	})
	if ctrl.HasSynced() {
		t.Error("HasSynced before the Secrets were listed")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatal("Run did not return after its context ended")
	}
	if n := handler.count(); n != 0 {
		t.Errorf("handler called %d times with no Secret listed", n)
	}
	goleak.VerifyNone(t, baseline)
}
