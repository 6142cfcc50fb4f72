package localmesh

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FreeAddrs asks the kernel for n distinct free 127.0.0.1:<port> addresses. Another
// process may take one before it is used; callers retry or fail clearly.
func FreeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

type authClient struct{ *http.Client }

func (a *authClient) Get(url string) (*http.Response, error) { return a.Client.Get(url) }

type getter interface {
	Get(url string) (*http.Response, error)
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, p *process, c getter, url string, timeout time.Duration) error {
	var last error
	err := poll(ctx, p, timeout, func() bool {
		resp, err := c.Get(url)
		if err != nil {
			last = err
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = fmt.Errorf("%s: %s", url, resp.Status)
			return false
		}
		return true
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return err
}

// poll calls cond every 50ms until it is true, the process exits or timeout passes.
func poll(ctx context.Context, p *process, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("process exited: %v", p.err)
		case <-t.C:
		}
	}
}

// freePorts asks the kernel for n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	addrs, err := FreeAddrs(n)
	if err != nil {
		return nil, err
	}
	ports := make([]int, len(addrs))
	for i, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			return nil, err
		}
		if ports[i], err = strconv.Atoi(p); err != nil {
			return nil, err
		}
	}
	return ports, nil
}

// process is a child process whose output goes to a log file.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // set before done is closed
	once    sync.Once
}

// startProcess starts bin; its output is appended to logPath, so that the log of a
// restarted server follows the earlier one.
func startProcess(logPath, bin string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Die with the parent process even if it is killed before cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// kill ends the process with SIGKILL and waits for it, unless stop or kill already ran.
func (p *process) kill() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
}

func (p *process) stop() {
	p.once.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		// A frozen process (freeze) acts on SIGTERM only once it runs again.
		p.cmd.Process.Signal(syscall.SIGCONT)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// freeze stops the process with SIGSTOP: it keeps its sockets, and the kernel still
// accepts connections for it, but it answers nothing until thaw.
func (p *process) freeze() error {
	select {
	case <-p.done:
		return fmt.Errorf("freeze: process exited: %v", p.err)
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	// The signal is delivered asynchronously: until every thread has stopped, a
	// request may still be answered.
	deadline := time.Now().Add(5 * time.Second)
	for !stopped(p.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("freeze: process %d not stopped after 5s", p.cmd.Process.Pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// stopped reports whether every thread of process pid is stopped by a signal, as
// /proc shows it (state T).
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses and may hold
		// spaces: it is the first field after the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 || i+2 >= len(stat) || stat[i+2] != 'T' {
			return false
		}
	}
	return true
}

// thaw continues a frozen process with SIGCONT; thawing a running or exited process
// does nothing.
func (p *process) thaw() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
}
