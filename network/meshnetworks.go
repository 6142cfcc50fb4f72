package network

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// ParseMeshNetworks parses Istio's MeshNetworks YAML or JSON and validates it.
//
// Unknown fields and duplicate keys are errors, so that a misspelt field is reported
// rather than silently ignored. Empty input (or a YAML null) is an empty, valid
// configuration. As everywhere in Kubernetes YAML, a few bare words are booleans (y, n,
// yes, no, on, off, true, false): a network with such a name must be quoted.
func ParseMeshNetworks(data []byte) (*meshv1alpha1.MeshNetworks, error) {
	mn := &meshv1alpha1.MeshNetworks{}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parse meshNetworks: %w", err)
	}
	if js = bytes.TrimSpace(js); len(js) == 0 || string(js) == "null" {
		return mn, nil
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, mn); err != nil {
		return nil, &parseError{msg: "parse meshNetworks: " + protoPosition.ReplaceAllString(err.Error(), "") + topLevelHint(js), err: err}
	}
	if err := ValidateMeshNetworks(mn); err != nil {
		return nil, fmt.Errorf("invalid meshNetworks: %w", err)
	}
	return mn, nil
}

// ValidateMeshNetworks returns every problem in mn joined with errors.Join, each
// naming the field path that is wrong, e.g.
// "networks.network2.gateways[0].port: must be 1-65535". Networks are checked in name
// order, so the result is deterministic. A nil mn is valid.
//
// The rules: network names are non-empty; each endpoints entry has exactly one of
// fromCidr (an IP prefix, or a single IP address) and fromRegistry (a cluster ID, in at
// most one network); each gateway has exactly one of address (an IP address or a DNS
// name) and registryServiceName (a service host <name>.<namespace>.svc.<domain>, looked
// up in the network's fromRegistry clusters, so the network needs at least one), and a
// port 1-65535. A gateway address may not be a loopback, link-local, multicast or
// broadcast IP; 0.0.0.0 (or ::) is Istio's placeholder for an address not known yet
// (see IsPlaceholderGateway).
func ValidateMeshNetworks(mn *meshv1alpha1.MeshNetworks) error {
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	registryOwner := map[string]string{} // fromRegistry cluster → network that claimed it first
	for _, name := range sortedNetworkNames(mn) {
		nw := mn.GetNetworks()[name]
		path := "networks." + name
		if name == "" {
			// The path of an empty name would read "networks.", so name it plainly.
			path = `networks[""]`
			fail(path, "network name must be non-empty")
		}
		hasRegistry := false
		for i, ep := range nw.GetEndpoints() {
			epPath := fmt.Sprintf("%s.endpoints[%d]", path, i)
			cidr, registry := ep.GetFromCidr(), ep.GetFromRegistry()
			switch {
			case (cidr == "") == (registry == ""):
				fail(epPath, "exactly one of fromCidr or fromRegistry is required")
			case cidr != "":
				if _, err := parseCIDR(cidr); err != nil {
					fail(epPath+".fromCidr", "invalid CIDR %q", cidr)
				}
			default:
				hasRegistry = true
				if owner, ok := registryOwner[registry]; ok && owner != name {
					fail(epPath+".fromRegistry", "cluster %q is already in network %q; a cluster can be in one network only", registry, owner)
				} else {
					registryOwner[registry] = name
				}
			}
		}
		for i, gw := range nw.GetGateways() {
			gwPath := fmt.Sprintf("%s.gateways[%d]", path, i)
			addr, svc := gw.GetAddress(), gw.GetRegistryServiceName()
			switch {
			case (addr == "") == (svc == ""):
				fail(gwPath, "exactly one of address or registryServiceName is required")
			case addr != "":
				if !isIP(addr) && !isDNSName(addr) {
					fail(gwPath+".address", "%q is neither an IP address nor a valid DNS name", addr)
				} else if why := unusableGatewayIP(addr); why != "" {
					fail(gwPath+".address", "%q is %s; a gateway must be reachable from other networks", addr, why)
				}
			default:
				if !isServiceHost(svc) {
					fail(gwPath+".registryServiceName", "%q must be a service host <name>.<namespace>.svc.<domain>", svc)
				} else if !hasRegistry {
					fail(gwPath+".registryServiceName", "network %q has no fromRegistry endpoints to look the service up in", name)
				}
			}
			if p := gw.GetPort(); p < 1 || p > 65535 {
				fail(gwPath+".port", "must be 1-65535")
			}
		}
	}
	return errors.Join(errs...)
}

// protoPosition matches the prefix and position of a protojson error. The position is
// in the JSON converted from the user's YAML, so it would mislead. (The library puts a
// no-break space or a space after "proto:" at random.)
var protoPosition = regexp.MustCompile(`^proto:[\s\x{00a0}]*(\(line \d+:\d+\):[\s\x{00a0}]*)?`)

// parseError is a protojson error reworded for people; it unwraps to the original.
type parseError struct {
	msg string
	err error
}

func (e *parseError) Error() string { return e.msg }
func (e *parseError) Unwrap() error { return e.err }

// topLevelHint explains a common mistake: pasting the networks map itself (as in
// Istio's install values) where MeshNetworks, whose only field is networks, belongs.
func topLevelHint(js []byte) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(js, &top) != nil {
		return ""
	}
	if _, ok := top["networks"]; ok || len(top) == 0 {
		return ""
	}
	return " (the top level must be the networks field, e.g. \"networks:\" followed by the network names)"
}

func sortedNetworkNames(mn *meshv1alpha1.MeshNetworks) []string {
	names := make([]string, 0, len(mn.GetNetworks()))
	for name := range mn.GetNetworks() {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// parseCIDR parses an IP prefix; a bare IP address is the prefix of that one address,
// as Istio accepts it. Host bits are masked off.
func parseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		if p.Bits() < 0 {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
	}
	return p.Masked(), nil
}

// IsPlaceholderGateway reports whether a meshNetworks gateway address is Istio's
// documented placeholder for "address not known yet": 0.0.0.0 or ::. Such a gateway
// is accepted but never served; nothing can connect to it.
func IsPlaceholderGateway(addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err == nil && a.Unmap().IsUnspecified()
}

// unusableGatewayIP says why addr, if it is an IP address, cannot be a gateway that
// other networks connect to; "" if it can (or is a DNS name, or the placeholder).
func unusableGatewayIP(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return ""
	}
	a = a.Unmap()
	switch {
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a.IsMulticast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast():
		return "a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	}
	return ""
}

func isIP(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == ""
}

// isDNSName reports whether s is a DNS name: dot-separated RFC 1123 labels, any case,
// with an optional trailing dot.
func isDNSName(s string) bool {
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	return s != "" && len(validation.IsDNS1123Subdomain(s)) == 0
}

// isServiceHost reports whether s is <name>.<namespace>.svc.<domain>.
func isServiceHost(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) < 4 || parts[2] != "svc" {
		return false
	}
	return len(validation.IsDNS1035Label(parts[0])) == 0 &&
		len(validation.IsDNS1123Label(parts[1])) == 0 &&
		len(validation.IsDNS1123Subdomain(strings.Join(parts[3:], "."))) == 0
}
