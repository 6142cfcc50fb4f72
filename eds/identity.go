package eds

import (
	"fmt"
	"slices"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/network"
)

// DefaultTrustDomain is Options.TrustDomain when it is not set: Istio's default.
const DefaultTrustDomain = "cluster.local"

// MaxPeerIdentities caps the SPIFFE identities one cluster's TLS context names. A
// service port whose pods run as more service accounts than this accepts any service
// account of the service's namespace instead (PeerIdentities).
const MaxPeerIdentities = 64

// maxTrustDomainLen is the longest trust domain the SPIFFE ID specification allows.
const maxTrustDomainLen = 255

// validTrustDomain checks td against the SPIFFE trust domain grammar: lower-case
// letters, digits, '.', '-' and '_'.
func validTrustDomain(td string) error {
	if len(td) > maxTrustDomainLen {
		return fmt.Errorf("must be at most %d characters, got %d", maxTrustDomainLen, len(td))
	}
	for _, r := range td {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("%q: a SPIFFE trust domain has only lower-case letters, digits, '.', '-' and '_'", td)
		}
	}
	return nil
}

// PeerIdentities is whom a client of one service port accepts as its server: the
// SPIFFE identities spiffe://<trust domain>/ns/<namespace>/sa/<service account> of the
// pods behind the port's endpoints, in every cluster and on every network (a
// gateway passes mTLS through, so a client behind it still talks to the pod).
//
// When no endpoint has a pod (no identity is known), or the pods run as more than
// MaxPeerIdentities service accounts, Prefix is set instead: any service account of
// the service's namespace is accepted. Either way a certificate of another
// namespace is refused.
//
// The zero value names no one: a cluster built with it checks the peer's chain only.
type PeerIdentities struct {
	// IDs are sorted and deduplicated; nil when Prefix is set.
	IDs []string
	// Prefix is spiffe://<trust domain>/ns/<namespace>/sa/, or empty.
	Prefix string
}

func (p PeerIdentities) equal(o PeerIdentities) bool {
	return p.Prefix == o.Prefix && slices.Equal(p.IDs, o.IDs)
}

// spiffePrefix is the SPIFFE ID of namespace ns in trust domain td, up to the
// service account.
func spiffePrefix(td, ns string) string { return "spiffe://" + td + "/ns/" + ns + "/sa/" }

// peerIdentitiesOf returns the identities behind eps (all the clusters' endpoints of
// one service port) of a service in namespace ns. A pod with no service account
// runs as "default", as Kubernetes does.
func peerIdentitiesOf(td, ns string, eps map[network.ClusterID][]clusterregistry.Endpoint) PeerIdentities {
	type account struct{ namespace, name string }
	seen := map[account]bool{} // keys share the endpoints' strings: no allocation per endpoint
	for _, list := range eps {
		for i := range list {
			e := &list[i]
			podNS, _, ok := strings.Cut(e.Pod, "/")
			if !ok {
				continue // no pod: no identity
			}
			a := account{podNS, e.ServiceAccount}
			if a.name == "" {
				a.name = "default"
			}
			if seen[a] {
				continue
			}
			if len(seen) == MaxPeerIdentities {
				return PeerIdentities{Prefix: spiffePrefix(td, ns)}
			}
			seen[a] = true
		}
	}
	if len(seen) == 0 {
		return PeerIdentities{Prefix: spiffePrefix(td, ns)}
	}
	ids := make([]string, 0, len(seen))
	for a := range seen {
		ids = append(ids, spiffePrefix(td, a.namespace)+a.name)
	}
	slices.Sort(ids)
	return PeerIdentities{IDs: ids}
}

// matchers returns p as string matchers: exact matches of the identities, or one
// prefix match.
func (p PeerIdentities) matchers() []*matcherv3.StringMatcher {
	if p.Prefix != "" {
		return []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p.Prefix}}}
	}
	out := make([]*matcherv3.StringMatcher, len(p.IDs))
	for i, id := range p.IDs {
		out[i] = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}
	}
	return out
}
