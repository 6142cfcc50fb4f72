package secrets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// RefusalKind names what made a remote kubeconfig unusable. The set is fixed, so that
// it can label a metric whatever a Secret holds.
type RefusalKind string

// The kinds of refusal, one per allowlist rule; RefusalKinds lists them all.
const (
	RefusedExec                  RefusalKind = "exec"
	RefusedAuthProvider          RefusalKind = "auth_provider"
	RefusedImpersonation         RefusalKind = "impersonation"
	RefusedBasicAuth             RefusalKind = "basic_auth"
	RefusedFilePath              RefusalKind = "file_path"
	RefusedInsecureSkipTLSVerify RefusalKind = "insecure_skip_tls_verify"
	RefusedProxyURL              RefusalKind = "proxy_url"
	RefusedHTTP                  RefusalKind = "http"
	RefusedUserinfo              RefusalKind = "userinfo"
	RefusedQuery                 RefusalKind = "query" // a query or fragment in the server URL
	RefusedAddress               RefusalKind = "address"
	RefusedMalformed             RefusalKind = "malformed" // not a usable kubeconfig at all
	RefusedOther                 RefusalKind = "other"
)

// RefusalKinds is every RefusalKind, in a fixed order.
var RefusalKinds = []RefusalKind{
	RefusedExec, RefusedAuthProvider, RefusedImpersonation, RefusedBasicAuth, RefusedFilePath,
	RefusedInsecureSkipTLSVerify, RefusedProxyURL, RefusedHTTP, RefusedUserinfo, RefusedQuery,
	RefusedAddress, RefusedMalformed, RefusedOther,
}

// refusalError is an error of LoadKubeconfig with the kind of refusal it is.
type refusalError struct {
	kind RefusalKind
	err  error
}

func (e *refusalError) Error() string { return e.err.Error() }
func (e *refusalError) Unwrap() error { return e.err }

func refuse(kind RefusalKind, err error) error { return &refusalError{kind: kind, err: err} }

// RefusalKindOf returns the kind of a LoadKubeconfig error: RefusedOther for an error
// that carries none.
func RefusalKindOf(err error) RefusalKind {
	var r *refusalError
	if errors.As(err, &r) {
		return r.kind
	}
	return RefusedOther
}

const classLoopback = "loopback"

var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// refusedAddressClass returns the class of address a that a remote cluster may not be
// reached at ("link-local", "multicast", "unspecified", "broadcast", and "loopback"
// unless allowLoopback), or "" if it may.
func refusedAddressClass(a netip.Addr, allowLoopback bool) string {
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	case a == broadcast:
		return "broadcast"
	case a.IsLoopback() && !allowLoopback:
		return classLoopback
	}
	return ""
}

// maxDialAddrs bounds the addresses of one server name tried per connection.
const maxDialAddrs = 8

// dialer connects to a remote cluster's server, checking every address it connects
// to: a name that resolves to a refused address (see refusedAddressClass) is refused
// at each connection, so a DNS answer that changes after the kubeconfig was accepted
// (DNS rebinding) cannot point Horizon at one. It connects to the very addresses it
// checked; it never resolves the name again.
type dialer struct {
	resolver      Resolver
	allowLoopback bool
	net           net.Dialer
}

func newDialer(opts LoadOptions) *dialer {
	d := &dialer{resolver: opts.Resolver, allowLoopback: !opts.RefuseLoopback,
		net: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}}
	if d.resolver == nil {
		d.resolver = net.DefaultResolver
	}
	return d
}

// DialContext resolves address's host, refuses it if any of its addresses is of a
// refused class, and otherwise connects to the first of them that answers.
func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ipNet := "ip"
		switch network {
		case "tcp4":
			ipNet = "ip4"
		case "tcp6":
			ipNet = "ip6"
		}
		if addrs, err = d.resolver.LookupNetIP(ctx, ipNet, host); err != nil {
			return nil, err
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("remote server host %q resolves to no address", host)
		}
	}
	for _, a := range addrs {
		if class := refusedAddressClass(a, d.allowLoopback); class != "" {
			return nil, fmt.Errorf("remote server host %q resolves to %s (%s), an address a remote cluster may not use", host, a.Unmap(), class)
		}
	}
	if len(addrs) > maxDialAddrs {
		addrs = addrs[:maxDialAddrs]
	}
	var firstErr error
	for _, a := range addrs {
		conn, err := d.net.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}
