// Command grpcconnmem measures what gRPC's server costs per idle connection, apart
// from Horizon: a child process serves ADS with a handler that answers the first
// request and then blocks in Recv, as Horizon's does between pushes; this process
// opens -conns connections with one stream each and reads the child's Go heap,
// goroutine stacks and RSS (after two forced GCs) before and after.
//
//	go run ./cmd/grpcconnmem -conns 1000 -knobs shared-write-buffer
//	go run ./cmd/grpcconnmem -conns 1000 -knobs shared-write-buffer,read-buffer-0
//
// The base server has Horizon's keepalive, stream and message bounds; -knobs adds
// server options one by one (-help lists them). docs/load.md has the results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// knobs are the server options that can be added to the base server, by name.
var knobs = map[string]grpc.ServerOption{
	"shared-write-buffer": grpc.SharedWriteBuffer(true),
	"read-buffer-0":       grpc.ReadBufferSize(0),
	"read-buffer-4k":      grpc.ReadBufferSize(4 << 10),
	"write-buffer-4k":     grpc.WriteBufferSize(4 << 10),
	"window-1m":           grpc.InitialWindowSize(1 << 20),
	"conn-window-1m":      grpc.InitialConnWindowSize(1 << 20),
	"window-64k":          grpc.InitialWindowSize(64 << 10),
	"header-table-0":      grpc.HeaderTableSize(0),
	"max-header-list-16k": grpc.MaxHeaderListSize(16 << 10),
	"stream-workers-4":    grpc.NumStreamWorkers(4),
	"keepalive-none":      grpc.KeepaliveParams(keepalive.ServerParameters{}),
}

func main() {
	serve := flag.Bool("serve", false, "run as the measured server (the child process)")
	knobList := flag.String("knobs", "", "comma-separated server options added to the base server: "+strings.Join(knobNames(), ", "))
	conns := flag.Int("conns", 1000, "connections to open, one ADS stream each (1-20000)")
	flag.Parse()
	opts, err := serverOptions(*knobList)
	if err == nil && (*conns < 1 || *conns > 20000) {
		err = fmt.Errorf("-conns: must be 1-20000, got %d", *conns)
	}
	if err == nil {
		if *serve {
			err = runServer(opts, slices.Contains(strings.Split(*knobList, ","), netHTTP))
		} else {
			err = measure(*knobList, *conns)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcconnmem:", err)
		os.Exit(1)
	}
}

func knobNames() []string {
	names := []string{netHTTP}
	for n := range knobs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// netHTTP is the pseudo-knob that serves gRPC through net/http's HTTP/2 server
// (grpc.Server.ServeHTTP, cleartext HTTP/2) instead of gRPC's own transport.
const netHTTP = "net-http"

// serverOptions is the base server's options (Horizon's keepalive from
// cmd/horizon/app, the stream and message bounds of eds.Server.GRPCOptions) plus
// the named knobs.
func serverOptions(list string) ([]grpc.ServerOption, error) {
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(100),
		grpc.MaxRecvMsgSize(4 << 20),
	}
	for k := range strings.SplitSeq(list, ",") {
		if k == "" || k == netHTTP {
			continue
		}
		o, ok := knobs[k]
		if !ok {
			return nil, fmt.Errorf("-knobs: unknown %q (known: %s)", k, strings.Join(knobNames(), ", "))
		}
		opts = append(opts, o)
	}
	return opts, nil
}

type ads struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
}

func (ads) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	for {
		req, err := st.Recv()
		if err != nil {
			return err
		}
		if req.GetResponseNonce() == "" {
			if err := st.Send(&discoveryv3.DiscoveryResponse{VersionInfo: "1", Nonce: "1", TypeUrl: req.GetTypeUrl()}); err != nil {
				return err
			}
		}
	}
}

// runServer serves ADS (through net/http's HTTP/2 server with viaHTTP) and, on a
// second port, /mem; it prints both addresses.
func runServer(opts []grpc.ServerOption, viaHTTP bool) error {
	g := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, ads{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/mem", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		runtime.GC()
		debug.FreeOSMemory()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Fprintf(w, "%d %d %d %d\n", m.HeapAlloc, m.StackInuse, rssBytes(), runtime.NumGoroutine())
	})
	go http.Serve(hl, mux) //nolint:errcheck // ends with the process
	fmt.Println(lis.Addr(), hl.Addr())
	if viaHTTP {
		hs := &http.Server{Handler: g, Protocols: new(http.Protocols)}
		hs.Protocols.SetUnencryptedHTTP2(true)
		return hs.Serve(lis)
	}
	return g.Serve(lis)
}

func rssBytes() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for l := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb << 10
		}
	}
	return 0
}

// measure starts the server as a child process, connects n clients and prints the
// growth per connection.
func measure(knobList string, n int) error {
	cmd := exec.Command(os.Args[0], "-serve", "-knobs", knobList)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	var addr, memAddr string
	if _, err := fmt.Fscan(out, &addr, &memAddr); err != nil {
		return fmt.Errorf("read the server's addresses: %w", err)
	}
	mem := func() ([4]float64, error) {
		var v [4]float64
		time.Sleep(time.Second)
		resp, err := http.Get("http://" + memAddr + "/mem")
		if err != nil {
			return v, err
		}
		defer resp.Body.Close()
		_, err = fmt.Fscan(resp.Body, &v[0], &v[1], &v[2], &v[3])
		return v, err
	}
	before, err := mem()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acked := make(chan error, n)
	for range n {
		c, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer c.Close()
		go func() {
			st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c).StreamAggregatedResources(ctx)
			if err == nil {
				err = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: "t", ResourceNames: []string{"a"}})
			}
			if err == nil {
				_, err = st.Recv()
			}
			if err == nil {
				err = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: "t", ResponseNonce: "1"})
			}
			acked <- err
			if err == nil {
				st.Recv() // held open until ctx ends
			}
		}()
	}
	var errs []error
	for range n {
		if err := <-acked; err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%d of %d streams failed: %w", len(errs), n, errs[0])
	}
	after, err := mem()
	if err != nil {
		return err
	}
	per := func(i int) float64 { return (after[i] - before[i]) / float64(n) / 1024 }
	if knobList == "" {
		knobList = "(base)"
	}
	fmt.Printf("%-40s %5d conns: per connection heap %.1f KiB, stacks %.1f KiB, RSS %.1f KiB, %.1f goroutines\n",
		knobList, n, per(0), per(1), per(2), (after[3]-before[3])/float64(n))
	return nil
}
