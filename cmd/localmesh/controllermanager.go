package localmesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ClusterOptions shape a cluster started by StartClusterWith.
type ClusterOptions struct {
	// ControllerManager runs kube-controller-manager next to the API server, with only
	// the controllers that make EndpointSlices from Services and Pods. A cluster that
	// runs it must not also get hand-written slices for Services with selectors (Deploy
	// writes them): the controller would make a second copy. Use DeployPods there.
	ControllerManager bool
	// ReadyTimeout is how long the API server may take to write its certificate and
	// then to answer /readyz; 3 minutes when zero. Many API servers starting on a busy
	// machine need longer.
	ReadyTimeout time.Duration
}

// controllers are the kube-controller-manager controllers a cluster runs: the
// EndpointSlice controller (slices from Services with selectors and their Pods), and
// the mirroring controller for Endpoints written by hand.
var controllers = []string{"endpointslice", "endpointslicemirroring"}

// startControllerManager starts kube-controller-manager for c, authenticated with the
// admin credential through a kubeconfig in c's directory, and waits until it answers
// /healthz on its own free loopback port. Its log is kube-controller-manager.log in c's
// directory.
func (c *Cluster) startControllerManager(ctx context.Context) (*process, error) {
	bin := filepath.Join(c.env.binDir, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("kube-controller-manager not found in %s (run `make testbin`): %w", c.env.binDir, err)
	}
	kc, err := c.Kubeconfig(adminToken)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(c.dir, "controller-manager.kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[0]),
		"--cert-dir=" + filepath.Join(c.dir, "controller-manager-certs"),
		// Slices follow pod changes at once: tests wait for them.
		"--endpointslice-updates-batch-period=0s",
		"--profiling=false",
		"--v=1",
	}
	proc, err := startProcess(filepath.Join(c.dir, "kube-controller-manager.log"), bin, args...)
	if err != nil {
		return nil, fmt.Errorf("start kube-controller-manager %s: %w", c.Name, err)
	}
	// It serves a self-signed certificate made at start; only its health is read.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // local health probe
	defer hc.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[0])
	if err := waitHTTP(ctx, proc, hc, url, 60*time.Second); err != nil {
		proc.stop()
		return nil, fmt.Errorf("kube-controller-manager %s not healthy (log %s): %w", c.Name, proc.logPath, err)
	}
	return proc, nil
}

// HasControllerManager reports whether c runs kube-controller-manager.
func (c *Cluster) HasControllerManager() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kcm != nil
}

// restartControllerManager starts kube-controller-manager again after Restart, if c
// runs one.
func (c *Cluster) restartControllerManager(ctx context.Context) error {
	c.mu.Lock()
	old := c.kcm
	c.mu.Unlock()
	if old == nil {
		return nil
	}
	select {
	case <-old.done:
	default:
		return errors.New("kube-controller-manager still running")
	}
	proc, err := c.startControllerManager(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.kcm = proc
	c.mu.Unlock()
	return nil
}
