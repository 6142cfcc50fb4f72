package secrets

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
)

// fakeResolver answers every name from a table that the test may change, as a DNS
// server under an attacker's control would.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
}

func (r *fakeResolver) set(host string, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.answers == nil {
		r.answers = map[string][]netip.Addr{}
	}
	r.answers[host] = nil
	for _, a := range addrs {
		r.answers[host] = append(r.answers[host], netip.MustParseAddr(a))
	}
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.answers[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestDialRefusesResolvedAddresses: a server name is checked at every connection
// against what its name resolves to then; a name that resolves to a refused address
// is refused with an error naming the address class, even after it first resolved to
// an allowed one (DNS rebinding), and an allowed answer is connected to as resolved.
func TestDialRefusesResolvedAddresses(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"APIVersions","versions":["v1"]}`))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	const name = "api.remote.test"

	res := &fakeResolver{}
	data := strings.Replace(kubeconfig("    token: "+secretToken+"\n"), "https://127.0.0.1:6443", "https://"+name+":"+port, 1)
	get := func(t *testing.T, opts LoadOptions) error {
		t.Helper()
		opts.Resolver = res
		cfg, err := LoadKubeconfig([]byte(data), opts)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSClientConfig.CAData, cfg.TLSClientConfig.ServerName = nil, ""
		cfg.TLSClientConfig.Insecure = true // the test server's certificate does not name the fake host
		hc, err := rest.HTTPClientFor(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(cfg.Host + "/api")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}

	res.set(name, "127.0.0.1")
	if err := get(t, LoadOptions{}); err != nil {
		t.Fatalf("a name resolving to loopback (allowed by default): %v", err)
	}
	for _, tt := range []struct {
		name  string
		addrs []string
		opts  LoadOptions
		want  string
	}{
		{"cloud metadata", []string{"169.254.169.254"}, LoadOptions{}, "resolves to 169.254.169.254 (link-local)"},
		{"IPv6 link-local", []string{"fe80::1"}, LoadOptions{}, "resolves to fe80::1 (link-local)"},
		{"multicast", []string{"224.0.0.1"}, LoadOptions{}, "resolves to 224.0.0.1 (multicast)"},
		{"unspecified", []string{"0.0.0.0"}, LoadOptions{}, "resolves to 0.0.0.0 (unspecified)"},
		{"broadcast", []string{"255.255.255.255"}, LoadOptions{}, "resolves to 255.255.255.255 (broadcast)"},
		{"one bad address among good ones", []string{"127.0.0.1", "169.254.169.254"}, LoadOptions{}, "resolves to 169.254.169.254 (link-local)"},
		{"IPv4-mapped metadata", []string{"::ffff:169.254.169.254"}, LoadOptions{}, "resolves to 169.254.169.254 (link-local)"},
		{"loopback refused", []string{"127.0.0.1"}, LoadOptions{RefuseLoopback: true}, "resolves to 127.0.0.1 (loopback)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res.set(name, tt.addrs...)
			err := get(t, tt.opts)
			if err == nil {
				t.Fatal("connected")
			}
			want := `remote server host "` + name + `" ` + tt.want + ", an address a remote cluster may not use"
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q, want it to contain %q", err, want)
			}
			if strings.Contains(err.Error(), secretToken) {
				t.Fatalf("error quotes the token: %q", err)
			}
		})
	}
}

// TestDialRefusesRebinding: one client, whose server name first resolves to an
// allowed address and then to the metadata address, is refused at its next
// connection.
func TestDialRefusesRebinding(t *testing.T) {
	// Each answer closes its connection, so that each request dials again.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	const name = "rebind.remote.test"
	res := &fakeResolver{}
	res.set(name, "127.0.0.1")
	data := strings.Replace(kubeconfig("    token: "+secretToken+"\n"), "https://127.0.0.1:6443", "https://"+name+":"+port, 1)
	cfg, err := LoadKubeconfig([]byte(data), LoadOptions{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSClientConfig.CAData, cfg.TLSClientConfig.Insecure = nil, true
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(cfg.Host + "/api")
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	resp.Body.Close()
	res.set(name, "169.254.169.254")
	if _, err := hc.Get(cfg.Host + "/api"); err == nil || !strings.Contains(err.Error(), "resolves to 169.254.169.254 (link-local)") {
		t.Fatalf("after the name moved to the metadata address: err = %v", err)
	}
}
