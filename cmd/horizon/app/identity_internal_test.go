package app

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/horizon-mesh/horizon/e2e/xdstest"
)

func TestCertificateIdentity(t *testing.T) {
	long := "spiffe://cluster.local/ns/" + strings.Repeat("n", 2100) + "/sa/x"
	tests := []struct {
		name       string
		uris       []string
		want       spiffeID
		wantReason string
		wantErr    string
	}{
		{"workload", []string{"spiffe://cluster.local/ns/sample/sa/sleep"}, spiffeID{"cluster.local", "sample", "sleep"}, "", ""},
		{"with another URI", []string{"https://example.com/x", "spiffe://cluster.local/ns/sample/sa/sleep"}, spiffeID{"cluster.local", "sample", "sleep"}, "", ""},
		{"upper-case scheme", []string{"SPIFFE://cluster.local/ns/sample/sa/sleep"}, spiffeID{"cluster.local", "sample", "sleep"}, "", ""},
		{"no URI", nil, spiffeID{}, refusedNoSPIFFEID, "no SPIFFE ID"},
		{"two IDs", []string{"spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/c/sa/d"}, spiffeID{}, refusedMalformedID, "has 2 SPIFFE IDs"},
		{"no trust domain", []string{"spiffe:///ns/a/sa/b"}, spiffeID{}, refusedMalformedID, "has no trust domain"},
		{"opaque", []string{"spiffe:cluster.local/ns/a/sa/b"}, spiffeID{}, refusedMalformedID, "has no trust domain"},
		{"port", []string{"spiffe://cluster.local:443/ns/a/sa/b"}, spiffeID{}, refusedMalformedID, "user, port, query or fragment"},
		{"user", []string{"spiffe://u@cluster.local/ns/a/sa/b"}, spiffeID{}, refusedMalformedID, "user, port, query or fragment"},
		{"fragment", []string{"spiffe://cluster.local/ns/a/sa/b#c"}, spiffeID{}, refusedMalformedID, "user, port, query or fragment"},
		{"percent-encoded slash", []string{"spiffe://cluster.local/ns/a%2Fsa/sa/b"}, spiffeID{}, refusedMalformedID, "percent-encoded"},
		{"upper-case trust domain", []string{"spiffe://Cluster.Local/ns/a/sa/b"}, spiffeID{}, refusedMalformedID, "invalid trust domain"},
		{"extra segment", []string{"spiffe://cluster.local/ns/a/sa/b/c"}, spiffeID{}, refusedMalformedID, "not a Kubernetes workload identity"},
		{"trailing slash", []string{"spiffe://cluster.local/ns/a/sa/b/"}, spiffeID{}, refusedMalformedID, "not a Kubernetes workload identity"},
		{"empty namespace", []string{"spiffe://cluster.local/ns//sa/b"}, spiffeID{}, refusedMalformedID, "not a Kubernetes workload identity"},
		{"dot-dot", []string{"spiffe://cluster.local/ns/../sa/b"}, spiffeID{}, refusedMalformedID, "not a Kubernetes workload identity"},
		{"swapped", []string{"spiffe://cluster.local/sa/b/ns/a"}, spiffeID{}, refusedMalformedID, "not a Kubernetes workload identity"},
		{"too long", []string{long}, spiffeID{}, refusedMalformedID, "longer than 2048 bytes"},
		{"other trust domain", []string{"spiffe://example.org/ns/a/sa/b"}, spiffeID{}, refusedTrustDomain, `not in trust domain "cluster.local"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &x509.Certificate{}
			for _, u := range tt.uris {
				p, err := url.Parse(u)
				if err != nil {
					t.Fatal(err)
				}
				cert.URIs = append(cert.URIs, p)
			}
			got, reason, err := certificateIdentity(cert, "cluster.local")
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			if err == nil || reason != tt.wantReason || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got reason %q, err %v; want %q, an error containing %q", reason, err, tt.wantReason, tt.wantErr)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes, want it bounded", len(err.Error()))
			}
		})
	}
}

func TestNamespaceClaims(t *testing.T) {
	tests := []struct {
		name string
		id   string
		md   map[string]any
		want []string
	}{
		{"Istio sidecar", "sidecar~10.0.0.1~sleep-0.sample~sample.svc.cluster.local", nil, []string{"sample", "sample"}},
		{"metadata too", "sidecar~10.0.0.1~sleep-0.sample~sample.svc.cluster.local", map[string]any{"NAMESPACE": "x"}, []string{"x", "sample", "sample"}},
		{"pod name with dots", "sidecar~10.0.0.1~a.b.c.sample~sample.svc.cluster.local", nil, []string{"sample", "sample"}},
		{"not an Istio ID", "proxy-1", map[string]any{"NAMESPACE": "x"}, []string{"x"}},
		{"empty metadata value", "proxy-1", map[string]any{"NAMESPACE": ""}, nil},
		{"pod without namespace, bare domain", "sidecar~10.0.0.1~sleep~local", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims, err := namespaceClaims(xdstest.NodeWithMetadata(tt.id, tt.md))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range claims {
				got = append(got, c[1])
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("claims %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCut(t *testing.T) {
	for _, s := range []string{"short", strings.Repeat("é", 200), strings.Repeat("x", 127) + "é" + "tail", "bad \xff utf-8"} {
		got := cut(s)
		if !utf8.ValidString(got) || len(got) > maxShown+len("…") {
			t.Errorf("cut(%q) = %q: not valid UTF-8 or longer than %d bytes", s, got, maxShown)
		}
		if len(s) <= maxShown && utf8.ValidString(s) && got != s {
			t.Errorf("cut(%q) = %q, want it unchanged", s, got)
		}
	}
}

func TestValidateTrustDomain(t *testing.T) {
	for _, td := range []string{"cluster.local", "mesh-1.example_org"} {
		if err := validateTrustDomain(td); err != nil {
			t.Errorf("%q: %v", td, err)
		}
	}
	for _, td := range []string{"", "Cluster.local", "a/b", "a b", "spiffe://x", strings.Repeat("a", 256)} {
		if err := validateTrustDomain(td); err == nil {
			t.Errorf("%q: accepted", td)
		}
	}
}
