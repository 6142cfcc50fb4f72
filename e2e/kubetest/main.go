package kubetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
)

// Main is a package's TestMain body: it starts an environment with one cluster per
// name, hands them to setup (in the order named) so the package can keep them, runs
// the tests, stops everything and exits with the tests' status.
func Main(m *testing.M, setup func(env *Environment, clusters []*Cluster), names ...string) {
	env, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clusters := make([]*Cluster, 0, len(names))
	for _, name := range names {
		c, err := env.StartCluster(context.Background(), name)
		if err != nil {
			env.Close()
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		clusters = append(clusters, c)
	}
	setup(env, clusters)
	code := m.Run()
	env.Close()
	os.Exit(code)
}

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
