package meshsource_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/meshsource"
)

// A Source reading a meshNetworks file, as `horizon serve --mesh-networks` does.
func Example_file() {
	dir, err := os.MkdirTemp("", "meshsource-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "meshNetworks")
	if err := os.WriteFile(file, []byte(configA), 0o644); err != nil {
		fmt.Println(err)
		return
	}

	applied := make(chan *network.Networks, 1)
	src, err := meshsource.New(meshsource.Options{
		File:     file,
		Logger:   slog.New(slog.DiscardHandler),
		OnChange: func(n *network.Networks) { applied <- n },
	})
	if err != nil {
		fmt.Println(err)
		return
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

	select {
	case n := <-applied:
		fmt.Println(n.Names(), src.Status().Generation)
	case <-time.After(10 * time.Second):
		fmt.Println("no configuration applied")
	}
	// Output: [network1 network2] 1
}
