package localmesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Versions of the binaries built by hack/testbin.sh; keep the two in step.
const (
	EtcdVersion = "v3.6.5"
	KubeVersion = "v1.34.1"
)

// adminToken authenticates as a member of system:masters on every local cluster.
const adminToken = "horizon-test-admin-token"

// BinDir returns the directory holding the etcd, kube-apiserver and
// kube-controller-manager binaries.
func BinDir() string {
	if d := os.Getenv("HORIZON_TESTBIN"); d != "" {
		return d
	}
	cache := os.Getenv("HORIZON_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "horizon")
	}
	return filepath.Join(cache, "testbin", "etcd-"+EtcdVersion+"_kube-"+KubeVersion)
}

// Environment is one etcd and the clusters started on it.
type Environment struct {
	dir      string
	binDir   string
	etcdURL  string
	etcd     *process
	mu       sync.Mutex
	clusters []*Cluster // guarded by mu
	closed   bool       // guarded by mu
}

// Cluster is one running kube-apiserver, and optionally kube-controller-manager.
type Cluster struct {
	// Name is the cluster's name in the environment; it is also its etcd prefix.
	Name string
	// Host is the API server URL, https://127.0.0.1:<port>.
	Host string
	// CAData is the PEM bundle that verifies the API server's serving certificate.
	CAData []byte
	// Config authenticates as a cluster administrator (system:masters).
	Config *rest.Config
	// Client is a clientset built from Config.
	Client kubernetes.Interface

	env  *Environment
	dir  string // certificates, tokens, service-account key and log
	port int
	// readyTimeout bounds each wait for the API server to come up.
	readyTimeout time.Duration

	mu   sync.Mutex
	proc *process // the running (or last) API server; guarded by mu
	kcm  *process // the running (or last) kube-controller-manager, nil if none; guarded by mu
}

// Start starts etcd in a fresh temporary directory. Close stops it and every cluster.
func Start() (*Environment, error) {
	binDir := BinDir()
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return nil, fmt.Errorf("test binary %s not found in %s (run `make testbin`): %w", b, binDir, err)
		}
	}
	dir, err := os.MkdirTemp("", "horizon-localmesh-")
	if err != nil {
		return nil, err
	}
	env := &Environment{dir: dir, binDir: binDir}
	ports, err := freePorts(2)
	if err != nil {
		env.Close()
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	env.etcdURL = client
	env.etcd, err = startProcess(filepath.Join(dir, "etcd.log"), filepath.Join(binDir, "etcd"),
		"--name=horizon-test",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=horizon-test="+peer,
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	)
	if err != nil {
		env.Close()
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	if err := waitHTTP(context.Background(), env.etcd, http.DefaultClient, client+"/health", startTimeout); err != nil {
		env.Close()
		return nil, fmt.Errorf("etcd did not become healthy (log %s): %w", env.etcd.logPath, err)
	}
	return env, nil
}

// StartCluster starts a new kube-apiserver named name (unique in the environment) and
// waits until it is ready. No controller runs in it; see StartClusterWith.
func (e *Environment) StartCluster(ctx context.Context, name string) (*Cluster, error) {
	return e.StartClusterWith(ctx, name, ClusterOptions{})
}

// StartClusterWith starts a new cluster named name (unique in the environment) as
// opts say and waits until it is ready.
func (e *Environment) StartClusterWith(ctx context.Context, name string, opts ClusterOptions) (*Cluster, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, errors.New("environment closed")
	}
	e.mu.Unlock()

	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o700); err != nil {
		return nil, err
	}
	if err := writeServiceAccountKey(filepath.Join(dir, "sa.key")); err != nil {
		return nil, err
	}
	if err := writeClientCA(dir); err != nil {
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+`,horizon-admin,horizon-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Name: name, Host: fmt.Sprintf("https://127.0.0.1:%d", ports[0]), env: e, dir: dir, port: ports[0], readyTimeout: opts.ReadyTimeout}
	if c.readyTimeout <= 0 {
		c.readyTimeout = startTimeout
	}
	proc, err := c.startAPIServer()
	if err != nil {
		return nil, err
	}
	c.proc = proc
	e.mu.Lock()
	e.clusters = append(e.clusters, c)
	e.mu.Unlock()

	// The API server writes its self-signed serving certificate (with the CA that
	// signed it) before it listens.
	crt := filepath.Join(dir, "certs", "apiserver.crt")
	if err := poll(ctx, proc, c.readyTimeout, func() bool {
		b, err := os.ReadFile(crt)
		if err != nil || len(b) == 0 {
			return false
		}
		c.CAData = b
		return true
	}); err != nil {
		return nil, fmt.Errorf("kube-apiserver %s wrote no certificate (log %s): %w", name, proc.logPath, err)
	}
	c.Config = &rest.Config{
		Host:            c.Host,
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData},
		QPS:             -1, // no client-side rate limit against a local cluster
	}
	if err := c.waitReady(ctx, proc); err != nil {
		return nil, err
	}
	c.Client, err = kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	if opts.ControllerManager {
		kcm, err := c.startControllerManager(ctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.kcm = kcm
		c.mu.Unlock()
	}
	return c, nil
}

// startAPIServer starts kube-apiserver for c on its port, with its certificate
// directory, token file, service-account key and etcd prefix.
func (c *Cluster) startAPIServer() (*process, error) {
	e := c.env
	proc, err := startProcess(filepath.Join(c.dir, "kube-apiserver.log"), filepath.Join(e.binDir, "kube-apiserver"),
		"--etcd-servers="+e.etcdURL,
		"--etcd-prefix=/"+c.Name,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.port),
		"--cert-dir="+filepath.Join(c.dir, "certs"),
		"--token-auth-file="+filepath.Join(c.dir, "tokens.csv"),
		"--client-ca-file="+filepath.Join(c.dir, clientCACert),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(c.dir, "sa.key"),
		"--service-account-signing-key-file="+filepath.Join(c.dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=0",
	)
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver %s: %w", c.Name, err)
	}
	return proc, nil
}

// restartProcess starts the API server again if it has exited. The environment's lock
// is held throughout, so that a concurrent Close either sees the new process or
// prevents it.
func (c *Cluster) restartProcess() (*process, error) {
	c.env.mu.Lock()
	defer c.env.mu.Unlock()
	if c.env.closed {
		return nil, errors.New("environment closed")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.proc.done:
	default:
		return nil, fmt.Errorf("restart kube-apiserver %s: still running", c.Name)
	}
	// Fail clearly, rather than through a process that exits at once, if something
	// else listens on the port now.
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", c.port))
	if err != nil {
		return nil, fmt.Errorf("restart kube-apiserver %s: port %d is no longer free: %w", c.Name, c.port, err)
	}
	l.Close()
	proc, err := c.startAPIServer()
	if err != nil {
		return nil, err
	}
	c.proc = proc
	return proc, nil
}

// startTimeout bounds how long etcd and each kube-apiserver may take to come up.
// Ten API servers starting at once on a loaded 2-core machine take minutes, not
// the seconds one takes alone.
const startTimeout = 3 * time.Minute

// waitReady waits until proc answers /readyz with c's admin credential.
func (c *Cluster) waitReady(ctx context.Context, proc *process) error {
	hc, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	if err := waitHTTP(ctx, proc, &authClient{hc}, c.Host+"/readyz", c.readyTimeout); err != nil {
		return fmt.Errorf("kube-apiserver %s not ready (log %s): %w", c.Name, proc.logPath, err)
	}
	return nil
}

// Stop stops the cluster's API server (and its controller manager); its data stays in etcd. Clients of the cluster
// then see connection errors, as with an unreachable remote cluster. The server shuts
// down gracefully, which takes up to 10s while clients hold watches open; Kill does not
// wait. Stopping a stopped cluster does nothing.
func (c *Cluster) Stop() {
	c.mu.Lock()
	proc, kcm := c.proc, c.kcm
	c.mu.Unlock()
	if kcm != nil {
		kcm.stop()
	}
	proc.stop()
}

// Kill stops the cluster's API server (and its controller manager) at once, as a crash or a lost machine would:
// every connection to it breaks, watches included. Its data stays in etcd; Restart
// brings it back. Killing a stopped cluster does nothing.
func (c *Cluster) Kill() {
	c.mu.Lock()
	proc, kcm := c.proc, c.kcm
	c.mu.Unlock()
	if kcm != nil {
		kcm.kill()
	}
	proc.kill()
}

// Freeze stops the cluster's API server with SIGSTOP, as a hung server or a
// black-holed load balancer behaves: connections to it are accepted by the kernel and
// stay open, but no request is answered and no watch event sent. Thaw continues it.
// Call Thaw in the test's cleanup: Stop and Kill work on a frozen server too, but
// everything else waits for it.
func (c *Cluster) Freeze() error {
	c.mu.Lock()
	proc := c.proc
	c.mu.Unlock()
	if err := proc.freeze(); err != nil {
		return fmt.Errorf("freeze kube-apiserver %s: %w", c.Name, err)
	}
	return nil
}

// Thaw continues the cluster's API server after Freeze. Thawing a running or
// stopped server does nothing.
func (c *Cluster) Thaw() {
	c.mu.Lock()
	proc := c.proc
	c.mu.Unlock()
	proc.thaw()
}

// Restart starts the API server (and its controller manager) again after Stop or Kill, on the same port with the same
// serving certificate, tokens, service-account key and etcd prefix, and waits until
// it is ready: Host, CAData, Config, Client and minted tokens stay valid, and every
// object written before Stop is still there. It fails if the server is running, if
// the environment is closed, or if another process took the port meanwhile.
func (c *Cluster) Restart(ctx context.Context) error {
	proc, err := c.restartProcess()
	if err != nil {
		return err
	}
	if err := c.waitReady(ctx, proc); err != nil {
		return err
	}
	// The server found its certificate in the certificate directory rather than
	// generating a new one; check, since every client trusts the old one.
	crt, err := os.ReadFile(filepath.Join(c.dir, "certs", "apiserver.crt"))
	if err != nil {
		return fmt.Errorf("restart kube-apiserver %s: %w", c.Name, err)
	}
	if !bytes.Equal(crt, c.CAData) {
		return fmt.Errorf("restart kube-apiserver %s: serving certificate changed", c.Name)
	}
	if err := c.restartControllerManager(ctx); err != nil {
		return fmt.Errorf("restart cluster %s: %w", c.Name, err)
	}
	return nil
}

// Close stops every cluster and etcd and removes their files.
func (e *Environment) Close() {
	e.mu.Lock()
	e.closed = true
	clusters := e.clusters
	e.mu.Unlock()
	for _, c := range clusters {
		c.Stop()
	}
	if e.etcd != nil {
		e.etcd.stop()
	}
	if os.Getenv("HORIZON_KEEP_TESTDIR") == "" {
		os.RemoveAll(e.dir)
	}
}

func writeServiceAccountKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return os.WriteFile(path, b, 0o600)
}
