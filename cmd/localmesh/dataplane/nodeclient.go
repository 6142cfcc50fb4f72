package dataplane

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NodeClientDir is the Node xDS client's directory (client.js, test.proto,
// package.json, package-lock.json), relative to the repository root.
const NodeClientDir = "cmd/localmesh/dataplane/nodeclient"

// maxNodeCalls is client.js's bound on the calls of one batch.
const maxNodeCalls = 10000

// InstallNodeClient installs the Node xDS client's npm packages with
// hack/nodeclient.sh of the repository at root (npm ci into ~/.cache/horizon, once per
// lockfile) and returns their node_modules directory.
func InstallNodeClient(ctx context.Context, root string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "nodeclient.sh"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/nodeclient.sh: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}

// NodeClientOptions configure StartNodeClient.
type NodeClientOptions struct {
	// Root is the repository root, holding NodeClientDir.
	Root string
	// Modules is the node_modules directory InstallNodeClient returned.
	Modules string
	// Bootstrap is the xDS bootstrap (see Bootstrap); it is written to Dir.
	Bootstrap []byte
	// Dir receives the bootstrap and the client's log (client.log).
	Dir string
	// Target is host:port, dialed as xds:///<Target>.
	Target string
	// SNI, when set, is sent as the TLS server name (grpc.ssl_target_name_override):
	// @grpc/grpc-js-xds ignores UpstreamTlsContext.sni and sends Target's host.
	SNI string
	// NoWaitForReady makes calls fail at once, with the reason, while the channel
	// has no ready connection, instead of waiting up to 5 s for one.
	NoWaitForReady bool
	// Env is added to the client's environment, e.g. GRPC_TRACE and GRPC_VERBOSITY.
	Env []string
}

// NodeClient is a proxyless gRPC client on Node's xDS client, @grpc/grpc-js-xds: one
// node process keeping one channel to xds:///<target>, making calls on request.
// Its methods belong to one goroutine.
type NodeClient struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // stdout lines; closed at its end
	done  chan struct{} // closed once the process has exited
	log   string
	mu    sync.Mutex
	err   error // the process's exit, once done is closed; guarded by mu
}

// NodeBatch is the answer to NodeClient.Calls: what each call got.
type NodeBatch struct {
	Calls    int            `json:"calls"`
	Failed   int            `json:"failed"`
	Versions map[string]int `json:"versions"`
	Results  []NodeResult   `json:"results"`
	Error    string         `json:"error"` // the client refused the request
}

// NodeResult is one call: the version and pod that answered, or the error.
type NodeResult struct {
	Version string  `json:"version"`
	Pod     string  `json:"pod"`
	Error   string  `json:"error"`
	MS      float64 `json:"ms"`
}

// StartNodeClient starts the Node client. It connects to Horizon on its first call.
func StartNodeClient(o NodeClientOptions) (*NodeClient, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, errors.New("node not found: install Node.js 18 or later (make deps)")
	}
	if o.Modules == "" || o.Root == "" || o.Dir == "" || o.Target == "" {
		return nil, errors.New("NodeClientOptions: Root, Modules, Dir and Target are required")
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	bootstrap := filepath.Join(o.Dir, "bootstrap.json")
	if err := os.WriteFile(bootstrap, o.Bootstrap, 0o600); err != nil {
		return nil, err
	}
	logPath := filepath.Join(o.Dir, "client.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{filepath.Join(o.Root, NodeClientDir, "client.js"), "--target", "xds:///" + o.Target, "--stdin"}
	if o.SNI != "" {
		args = append(args, "--sni", o.SNI)
	}
	if o.NoWaitForReady {
		args = append(args, "--no-wait-for-ready")
	}
	cmd := exec.Command(node, args...)
	cmd.Env = append(append(os.Environ(), "NODE_PATH="+o.Modules, "GRPC_XDS_BOOTSTRAP="+bootstrap), o.Env...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &NodeClient{cmd: cmd, stdin: stdin, lines: make(chan string), done: make(chan struct{}), log: logPath}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		err := cmd.Wait()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// Calls makes n calls one after another (each waiting up to 5 s for a ready
// connection, as Client.Call does, unless NoWaitForReady) and returns what each got.
func (c *NodeClient) Calls(ctx context.Context, n int) (NodeBatch, error) {
	if n < 1 || n > maxNodeCalls {
		return NodeBatch{}, fmt.Errorf("calls %d: want 1 to %d", n, maxNodeCalls)
	}
	if _, err := fmt.Fprintf(c.stdin, "%d\n", n); err != nil {
		return NodeBatch{}, fmt.Errorf("node client: %w (log %s:\n%s)", err, c.log, c.Log())
	}
	timer := time.NewTimer(time.Duration(n)*6*time.Second + 10*time.Second)
	defer timer.Stop()
	select {
	case line, ok := <-c.lines:
		if !ok {
			<-c.done
			return NodeBatch{}, c.exited()
		}
		var b NodeBatch
		if err := json.Unmarshal([]byte(line), &b); err != nil {
			return b, fmt.Errorf("node client printed %q: %w", line, err)
		}
		if b.Error != "" {
			return b, fmt.Errorf("node client: %s", b.Error)
		}
		return b, nil
	case <-timer.C:
		return NodeBatch{}, fmt.Errorf("node client did not answer %d calls in time (log %s)", n, c.log)
	case <-ctx.Done():
		return NodeBatch{}, ctx.Err()
	}
}

func (c *NodeClient) exited() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	return fmt.Errorf("node client exited: %v (log %s:\n%s)", err, c.log, c.Log())
}

// Log returns what the client wrote to standard error (its GRPC_TRACE output too).
func (c *NodeClient) Log() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

// Close ends the client's input, which makes it close its channel and exit, and
// waits for it (killing it after 5 s).
func (c *NodeClient) Close() error {
	_ = c.stdin.Close()
	go func() {
		for range c.lines { // what it still prints
		}
	}()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
