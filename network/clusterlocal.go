package network

import (
	"maps"
	"slices"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxServiceSettingsHosts bounds the hosts of all the mesh config's serviceSettings
// entries together.
const MaxServiceSettingsHosts = 1000

// ClusterLocalHosts is the hosts the mesh config's serviceSettings make cluster-local
// (settings.clusterLocal): a proxy gets only its own cluster's endpoints of them. A
// nil *ClusterLocalHosts holds no host. It is immutable.
type ClusterLocalHosts struct {
	all      bool            // "*"
	exact    map[string]bool // "a.b.svc.cluster.local"
	suffixes []string        // ".b.svc.cluster.local" of "*.b.svc.cluster.local", sorted
}

// Empty reports whether no host is cluster-local.
func (c *ClusterLocalHosts) Empty() bool {
	return c == nil || (!c.all && len(c.exact) == 0 && len(c.suffixes) == 0)
}

// Matches reports whether host is cluster-local: listed exactly, under a listed
// "*.suffix", or "*" is listed. Hosts compare case-insensitively.
func (c *ClusterLocalHosts) Matches(host string) bool {
	if c.Empty() {
		return false
	}
	if c.all {
		return true
	}
	host = strings.ToLower(host)
	if c.exact[host] {
		return true
	}
	for _, s := range c.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// WithSuffix returns c with every host under suffix (a DNS name; "svc.cluster.local"
// makes every <name>.<namespace>.svc.cluster.local host) cluster-local as well. c is
// not changed.
func (c *ClusterLocalHosts) WithSuffix(suffix string) *ClusterLocalHosts {
	out := &ClusterLocalHosts{exact: map[string]bool{}}
	if c != nil {
		out.all = c.all
		maps.Copy(out.exact, c.exact)
		out.suffixes = slices.Clone(c.suffixes)
	}
	out.suffixes = append(out.suffixes, "."+strings.ToLower(strings.Trim(suffix, ".")))
	slices.Sort(out.suffixes)
	out.suffixes = slices.Compact(out.suffixes)
	return out
}

// Equal reports whether c and o make the same hosts cluster-local as written.
func (c *ClusterLocalHosts) Equal(o *ClusterLocalHosts) bool {
	if c.Empty() || o.Empty() {
		return c.Empty() == o.Empty()
	}
	if c.all != o.all || len(c.exact) != len(o.exact) || !slices.Equal(c.suffixes, o.suffixes) {
		return false
	}
	for h := range c.exact {
		if !o.exact[h] {
			return false
		}
	}
	return true
}

// String lists the cluster-local hosts, sorted, for logs.
func (c *ClusterLocalHosts) String() string {
	if c.Empty() {
		return "[]"
	}
	var out []string
	if c.all {
		out = append(out, "*")
	}
	for h := range c.exact {
		out = append(out, h)
	}
	for _, s := range c.suffixes {
		out = append(out, "*"+s)
	}
	slices.Sort(out)
	return "[" + strings.Join(out, " ") + "]"
}

// compileServiceSettings validates the serviceSettings entries (path names the list
// in errors) and returns the hosts they make cluster-local. Every entry's hosts are
// validated, cluster-local or not: a host is "*", "*.<DNS name>" or a DNS name.
func compileServiceSettings(in []*meshv1alpha1.MeshConfig_ServiceSettings, path *field.Path) (*ClusterLocalHosts, error) {
	var errs field.ErrorList
	total := 0
	for _, e := range in {
		total += len(e.GetHosts())
	}
	if total > MaxServiceSettingsHosts {
		return nil, field.TooMany(path.Child("hosts"), total, MaxServiceSettingsHosts)
	}
	c := &ClusterLocalHosts{exact: map[string]bool{}}
	for i, e := range in {
		hp := path.Index(i).Child("hosts")
		if len(e.GetHosts()) == 0 {
			errs = append(errs, field.Required(hp, "an entry applies to the hosts it lists"))
		}
		local := e.GetSettings().GetClusterLocal()
		for j, h := range e.GetHosts() {
			h = strings.ToLower(h)
			name, wildcard := strings.CutPrefix(h, "*.")
			if h == "*" {
				if local {
					c.all = true
				}
				continue
			}
			if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
				errs = append(errs, field.Invalid(hp.Index(j), e.GetHosts()[j],
					`want "*", "*.<DNS name>" or a DNS name: `+strings.Join(msgs, "; ")))
				continue
			}
			switch {
			case !local:
			case wildcard:
				c.suffixes = append(c.suffixes, "."+name)
			default:
				c.exact[name] = true
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	slices.Sort(c.suffixes)
	c.suffixes = slices.Compact(c.suffixes)
	return c, nil
}
