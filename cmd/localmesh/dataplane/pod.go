package dataplane

import (
	"context"
	"crypto/tls"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// Pod is a workload: a gRPC server on a pod IP that requires mesh mTLS and answers
// every call with its version (ServerId) and name (Hostname).
type Pod struct {
	Name, Version, Addr string
	srv                 *grpc.Server
}

type podService struct {
	testgrpc.UnimplementedTestServiceServer
	name, version string
}

func (p podService) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{ServerId: p.version, Hostname: p.name}, nil
}

// StartPod serves on addr (ip:port) until Stop.
func StartPod(name, version, addr string, certs *Certs) (*Pod, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{certs.Cert},
		ClientCAs:    certs.Pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	srv := grpc.NewServer(grpc.Creds(creds))
	testgrpc.RegisterTestServiceServer(srv, podService{name: name, version: version})
	go srv.Serve(lis)
	return &Pod{Name: name, Version: version, Addr: lis.Addr().String(), srv: srv}, nil
}

// Stop stops the server at once.
func (p *Pod) Stop() { p.srv.Stop() }
