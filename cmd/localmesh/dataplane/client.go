package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"
)

// Client is a proxyless gRPC client of the mesh: grpc-go's own xDS client, talking
// to Horizon, dialing xds:///<target> with xDS mTLS credentials.
type Client struct {
	conn   *grpc.ClientConn
	client testgrpc.TestServiceClient
}

// Bootstrap returns a proxyless client's xDS bootstrap for a client on network at xdsAddr,
// whose certificate provider instance "default" reads certs' files. An empty network
// leaves NETWORK out of the node metadata, as a sidecar of a cluster installed without
// a network sends it.
func Bootstrap(xdsAddr, nodeID, network string, certs *Certs) ([]byte, error) {
	return BootstrapNode(xdsAddr, Node{ID: nodeID, Network: network}, certs)
}

// Node is the xDS node a client presents.
type Node struct {
	ID string
	// Network is its NETWORK metadata; empty: none.
	Network string
	// Cluster is its CLUSTER_ID metadata; empty: none.
	Cluster string
	// Region, Zone and SubZone are its locality: its Kubernetes node's.
	Region, Zone, SubZone string
}

// BootstrapNode is Bootstrap for node. The node always has a locality, with the
// fields that are set: Node's @grpc/grpc-js-xds refuses a bootstrap whose node has
// none.
func BootstrapNode(xdsAddr string, node Node, certs *Certs) ([]byte, error) {
	metadata := map[string]any{"GENERATOR": "grpc"}
	if node.Network != "" {
		metadata["NETWORK"] = node.Network
	}
	if node.Cluster != "" {
		metadata["CLUSTER_ID"] = node.Cluster
	}
	locality := map[string]string{}
	for k, v := range map[string]string{"region": node.Region, "zone": node.Zone, "sub_zone": node.SubZone} {
		if v != "" {
			locality[k] = v
		}
	}
	n := map[string]any{
		"id":       node.ID,
		"locality": locality,
		"metadata": metadata,
	}
	return json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xdsAddr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": n,
		"certificate_providers": map[string]any{
			"default": map[string]any{
				"plugin_name": "file_watcher",
				"config": map[string]any{
					"certificate_file":    certs.CertFile,
					"private_key_file":    certs.KeyFile,
					"ca_certificate_file": certs.CAFile,
					"refresh_interval":    "600s",
				},
			},
		},
	})
}

// Dial connects to xds:///target (host:port) through Horizon at xdsAddr, as a client
// on network (empty: none named; see Bootstrap).
func Dial(xdsAddr, nodeID, network, target string, certs *Certs) (*Client, error) {
	return DialNode(xdsAddr, Node{ID: nodeID, Network: network}, target, certs)
}

// DialNode is Dial as node (BootstrapNode).
func DialNode(xdsAddr string, node Node, target string, certs *Certs) (*Client, error) {
	bootstrap, err := BootstrapNode(xdsAddr, node, certs)
	if err != nil {
		return nil, err
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		return nil, fmt.Errorf("xds resolver: %w", err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(creds), grpc.WithResolvers(resolver))
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, client: testgrpc.NewTestServiceClient(conn)}, nil
}

// Call makes one call and returns the answering pod's version and name. It waits
// (up to 5 s) for a connection to be ready.
func (c *Client) Call(ctx context.Context) (version, pod string, err error) {
	return c.call(ctx, true)
}

// CallNow is Call without waiting for a connection: when every connection attempt
// has failed, it fails at once with the last attempt's error (a refused TLS
// handshake, for one).
func (c *Client) CallNow(ctx context.Context) (version, pod string, err error) {
	return c.call(ctx, false)
}

func (c *Client) call(ctx context.Context, wait bool) (version, pod string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.client.UnaryCall(ctx, &testpb.SimpleRequest{FillServerId: true}, grpc.WaitForReady(wait))
	if err != nil {
		return "", "", err
	}
	return resp.GetServerId(), resp.GetHostname(), nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
