package kubetest

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// Main is a package's TestMain body: it starts an environment with one cluster per
// name, hands them to setup (in the order named) so the package can keep them, runs
// the tests, stops everything and exits with the tests' status.
func Main(m *testing.M, setup func(env *Environment, clusters []*Cluster), names ...string) {
	MainWith(m, ClusterOptions{}, setup, names...)
}

// MainWith is Main with every cluster started as opts say (for example with the
// EndpointSlice controller running).
func MainWith(m *testing.M, opts ClusterOptions, setup func(env *Environment, clusters []*Cluster), names ...string) {
	env, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clusters := make([]*Cluster, 0, len(names))
	for _, name := range names {
		c, err := env.StartClusterWith(context.Background(), name, opts)
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
