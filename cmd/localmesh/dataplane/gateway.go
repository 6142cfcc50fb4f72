package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// nginxStreamModule is where Debian's libnginx-mod-stream installs the module.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// Gateway is nginx routing TLS connections by SNI (ssl_preread) to upstream
// addresses, never terminating TLS: a stand-in for a network's Envoy ingress gateway
// in AUTO_PASSTHROUGH mode.
type Gateway struct {
	Addr      string
	dir       string
	cmd       *exec.Cmd
	done      chan error
	AccessLog string // one line per connection: "<sni> <upstream> <status>"
}

// StartGateway starts nginx listening on addr, sending each SNI in routes to its
// upstream addresses (tried in order on connection failure).
func StartGateway(dir, addr string, routes map[string][]string) (*Gateway, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, errors.New("nginx not found: install Debian's nginx and libnginx-mod-stream")
	}
	if _, err := os.Stat(nginxStreamModule); err != nil {
		return nil, fmt.Errorf("nginx stream module missing (%s): install Debian's libnginx-mod-stream", nginxStreamModule)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	g := &Gateway{Addr: addr, dir: dir, AccessLog: filepath.Join(dir, "access.log"), done: make(chan error, 1)}
	var b strings.Builder
	fmt.Fprintf(&b, "load_module %s;\ndaemon off;\nmaster_process off;\nworker_processes 1;\n", nginxStreamModule)
	fmt.Fprintf(&b, "pid %s;\nerror_log %s info;\nevents { worker_connections 256; }\n", filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"))
	b.WriteString("stream {\n  map_hash_bucket_size 256;\n  log_format sni '$ssl_preread_server_name $upstream_addr $status';\n")
	fmt.Fprintf(&b, "  access_log %s sni;\n  map $ssl_preread_server_name $route {\n", g.AccessLog)
	snis := make([]string, 0, len(routes))
	for sni := range routes {
		snis = append(snis, sni)
	}
	sort.Strings(snis)
	for i, sni := range snis {
		fmt.Fprintf(&b, "    %s route%d;\n", sni, i)
	}
	b.WriteString("    default unknown_sni;\n  }\n")
	for i, sni := range snis {
		fmt.Fprintf(&b, "  upstream route%d {\n", i)
		for _, up := range routes[sni] {
			fmt.Fprintf(&b, "    server %s max_fails=0;\n", up)
		}
		b.WriteString("  }\n")
	}
	b.WriteString("  upstream unknown_sni { server 127.0.0.1:9 down; }\n")
	fmt.Fprintf(&b, "  server {\n    listen %s;\n    ssl_preread on;\n    proxy_connect_timeout 2s;\n    proxy_pass $route;\n  }\n}\n", addr)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	test := exec.Command(bin, "-t", "-p", dir, "-c", conf)
	test.Stdout, test.Stderr = &out, &out
	if err := test.Run(); err != nil {
		return nil, fmt.Errorf("nginx -t: %v: %s", err, out.String())
	}
	g.cmd = exec.Command(bin, "-p", dir, "-c", conf)
	g.cmd.Stdout, g.cmd.Stderr = &out, &out
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { g.done <- g.cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return g, nil
		}
		select {
		case err := <-g.done:
			return nil, fmt.Errorf("nginx exited: %v: %s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			g.Stop()
			return nil, fmt.Errorf("nginx not listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops nginx and waits for it.
func (g *Gateway) Stop() {
	if g.cmd == nil || g.cmd.Process == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
	g.cmd = nil
}

// Log returns the gateway's access log: one "<sni> <upstream> <status>" line per
// connection.
func (g *Gateway) Log() string {
	b, _ := os.ReadFile(g.AccessLog)
	return string(b)
}
