package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Identity binding: with a client CA, a proxy's client certificate carries its
// workload's SPIFFE ID, spiffe://<trust domain>/ns/<namespace>/sa/<service account>,
// and the node it sends may claim only that namespace and service account, as istiod
// checks. Every request that carries a node is checked, not only a stream's first:
// a proxy cannot switch to another identity on an open stream.

// Node metadata keys of a proxy's identity, as Istio's proxies send them.
const (
	metaNamespace      = "NAMESPACE"
	metaServiceAccount = "SERVICE_ACCOUNT"
)

// Reasons for refusing a call, the label values of horizon_xds_identity_refusals_total.
const (
	refusedNoCertificate  = "no_certificate"      // no verified client certificate
	refusedNoSPIFFEID     = "no_spiffe_id"        // a certificate without a SPIFFE URI SAN
	refusedMalformedID    = "malformed_spiffe_id" // a SPIFFE URI not of the form spiffe://td/ns/x/sa/y, or several
	refusedTrustDomain    = "trust_domain"        // a SPIFFE ID of another trust domain
	refusedNamespace      = "namespace"           // a node claiming another namespace
	refusedServiceAccount = "service_account"     // a node claiming another service account
)

var refusalReasons = []string{refusedNoCertificate, refusedNoSPIFFEID, refusedMalformedID, refusedTrustDomain, refusedNamespace, refusedServiceAccount}

const (
	// maxShown bounds each client-controlled value quoted in an error or a log line.
	maxShown = 128
	// maxSPIFFEIDLen is the SPIFFE specification's bound on an ID's length.
	maxSPIFFEIDLen = 2048
	// maxTrustDomainLen is the SPIFFE specification's bound on a trust domain.
	maxTrustDomainLen = 255
)

// cut returns s cut to maxShown bytes (on a rune boundary, "…" marking the cut),
// with invalid UTF-8 replaced, for quoting a value a client controls.
func cut(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxShown {
		return s
	}
	n := maxShown
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// spiffeID is a workload identity: spiffe://<TrustDomain>/ns/<Namespace>/sa/<ServiceAccount>.
type spiffeID struct {
	TrustDomain, Namespace, ServiceAccount string
}

func (id spiffeID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// validateTrustDomain checks a trust domain as the SPIFFE specification defines it:
// lowercase letters, digits, dots, dashes and underscores.
func validateTrustDomain(td string) error {
	switch {
	case td == "":
		return errors.New("must not be empty")
	case len(td) > maxTrustDomainLen:
		return fmt.Errorf("longer than %d bytes", maxTrustDomainLen)
	}
	for _, r := range td {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("%q: only lowercase letters, digits, '.', '-' and '_' are allowed", cut(td))
		}
	}
	return nil
}

// validPathSegment reports whether s is a SPIFFE path segment: letters, digits,
// dots, dashes and underscores, and neither "." nor "..".
func validPathSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// parseSPIFFEID parses a Kubernetes workload's SPIFFE ID. Its errors quote the ID,
// cut to maxShown.
func parseSPIFFEID(u *url.URL) (spiffeID, error) {
	raw := u.String()
	bad := func(why string) (spiffeID, error) {
		return spiffeID{}, fmt.Errorf("SPIFFE ID %q %s, want spiffe://<trust domain>/ns/<namespace>/sa/<service account>", cut(raw), why)
	}
	switch {
	case len(raw) > maxSPIFFEIDLen:
		return bad(fmt.Sprintf("is longer than %d bytes", maxSPIFFEIDLen))
	case u.Opaque != "" || u.Host == "":
		return bad("has no trust domain")
	case u.User != nil || u.Port() != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "":
		return bad("has a user, port, query or fragment")
	case u.RawPath != "" || strings.Contains(u.Path, "%"):
		return bad("has percent-encoded characters")
	case validateTrustDomain(u.Host) != nil:
		return bad("has an invalid trust domain")
	}
	seg := strings.Split(u.Path, "/")
	if len(seg) != 5 || seg[0] != "" || seg[1] != "ns" || seg[3] != "sa" || !validPathSegment(seg[2]) || !validPathSegment(seg[4]) {
		return bad("is not a Kubernetes workload identity")
	}
	return spiffeID{TrustDomain: u.Host, Namespace: seg[2], ServiceAccount: seg[4]}, nil
}

// certificateIdentity returns the SPIFFE ID of a client certificate, which must
// carry exactly one, in trustDomain; otherwise the reason it is refused and why.
func certificateIdentity(cert *x509.Certificate, trustDomain string) (spiffeID, string, error) {
	var ids []*url.URL
	for _, u := range cert.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			ids = append(ids, u)
		}
	}
	switch len(ids) {
	case 0:
		return spiffeID{}, refusedNoSPIFFEID, errors.New("the client certificate has no SPIFFE ID (URI SAN spiffe://<trust domain>/ns/<namespace>/sa/<service account>)")
	case 1:
	default:
		return spiffeID{}, refusedMalformedID, fmt.Errorf("the client certificate has %d SPIFFE IDs, want one", len(ids))
	}
	id, err := parseSPIFFEID(ids[0])
	if err != nil {
		return spiffeID{}, refusedMalformedID, fmt.Errorf("the client certificate's %w", err)
	}
	if id.TrustDomain != trustDomain {
		return spiffeID{}, refusedTrustDomain, fmt.Errorf("the client certificate's SPIFFE ID %s is not in trust domain %q (--trust-domain)", id, trustDomain)
	}
	return id, "", nil
}

// namespaceClaims returns the namespaces a node names, each with where it names it:
// metadata NAMESPACE, and in an Istio node ID (<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>)
// the pod's namespace and the DNS domain's first label.
func namespaceClaims(node *corev3.Node) (claims [][2]string, err error) {
	if v, ok := node.GetMetadata().GetFields()[metaNamespace]; ok {
		if _, isString := v.GetKind().(*structpb.Value_StringValue); !isString {
			return nil, fmt.Errorf("node metadata %s is not a string", metaNamespace)
		}
		if ns := v.GetStringValue(); ns != "" {
			claims = append(claims, [2]string{"node metadata " + metaNamespace, ns})
		}
	}
	parts := strings.Split(node.GetId(), "~")
	if len(parts) != 4 {
		return claims, nil
	}
	if i := strings.LastIndexByte(parts[2], '.'); i >= 0 {
		claims = append(claims, [2]string{"the node ID's pod namespace", parts[2][i+1:]})
	}
	if ns, _, found := strings.Cut(parts[3], "."); found {
		claims = append(claims, [2]string{"the node ID's DNS domain", ns})
	}
	return claims, nil
}

// identityBinder refuses xDS calls whose client certificate carries no usable SPIFFE
// ID, or whose node claims another namespace or service account than that ID. It is
// safe for concurrent use.
type identityBinder struct {
	trustDomain string
	log         *slog.Logger
	refused     *prometheus.CounterVec // by reason, one of refusalReasons
}

func newIdentityBinder(trustDomain string, reg prometheus.Registerer, logger *slog.Logger) *identityBinder {
	b := &identityBinder{
		trustDomain: trustDomain,
		log:         logger,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "horizon_xds_identity_refusals_total",
			Help: "xDS calls refused with PERMISSION_DENIED because the client certificate's SPIFFE ID is missing, malformed or of another trust domain, " +
				"or the node claims another namespace or service account, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range refusalReasons {
		b.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(b.refused)
	}
	return b
}

// refuse counts and logs a refusal and returns its status.
func (b *identityBinder) refuse(ctx context.Context, reason string, err error) error {
	b.refused.WithLabelValues(reason).Inc()
	var addr string
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	// Debug: a client can make as many refusals as it likes; the metric counts them.
	b.log.Debug("xDS call refused: client identity", "reason", reason, "peer", addr, "error", err)
	return status.Error(codes.PermissionDenied, "xDS client identity: "+err.Error())
}

// identity returns the SPIFFE ID of the call's verified client certificate.
func (b *identityBinder) identity(ctx context.Context) (spiffeID, error) {
	p, ok := peer.FromContext(ctx)
	var info credentials.TLSInfo
	if ok {
		info, ok = p.AuthInfo.(credentials.TLSInfo)
	}
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return spiffeID{}, b.refuse(ctx, refusedNoCertificate, errors.New("no verified client certificate"))
	}
	id, reason, err := certificateIdentity(info.State.PeerCertificates[0], b.trustDomain)
	if err != nil {
		return spiffeID{}, b.refuse(ctx, reason, err)
	}
	return id, nil
}

// check refuses a node that claims another namespace or service account than id. A
// request without a node claims nothing.
func (b *identityBinder) check(ctx context.Context, id spiffeID, req any) error {
	r, ok := req.(interface{ GetNode() *corev3.Node })
	if !ok || r.GetNode() == nil {
		return nil
	}
	node := r.GetNode()
	claims, err := namespaceClaims(node)
	if err != nil {
		return b.refuse(ctx, refusedNamespace, err)
	}
	for _, c := range claims {
		if c[1] != id.Namespace {
			return b.refuse(ctx, refusedNamespace, fmt.Errorf("%s names namespace %q, but the client certificate's SPIFFE ID is %s", c[0], cut(c[1]), id))
		}
	}
	if v, ok := node.GetMetadata().GetFields()[metaServiceAccount]; ok {
		if _, isString := v.GetKind().(*structpb.Value_StringValue); !isString {
			return b.refuse(ctx, refusedServiceAccount, fmt.Errorf("node metadata %s is not a string", metaServiceAccount))
		}
		if sa := v.GetStringValue(); sa != "" && sa != id.ServiceAccount {
			return b.refuse(ctx, refusedServiceAccount, fmt.Errorf("node metadata %s names service account %q, but the client certificate's SPIFFE ID is %s", metaServiceAccount, cut(sa), id))
		}
	}
	return nil
}

// unary checks a unary call (Fetch): the certificate, then the request's node.
func (b *identityBinder) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	id, err := b.identity(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.check(ctx, id, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// stream checks a stream's certificate when it opens, and the node of every request
// it receives.
func (b *identityBinder) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	id, err := b.identity(ss.Context())
	if err != nil {
		return err
	}
	return handler(srv, &boundStream{ServerStream: ss, b: b, id: id})
}

// boundStream checks the node of every request received on a stream against the
// stream's identity.
type boundStream struct {
	grpc.ServerStream
	b  *identityBinder
	id spiffeID
}

func (s *boundStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.b.check(s.Context(), s.id, m)
}
