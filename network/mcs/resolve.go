package mcs

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/horizon-mesh/horizon/network"
)

// Port is one port of an exported Service: the part of it that is the same for every
// cluster that serves the clusterset service.
type Port struct {
	Name     string `json:"name,omitempty"`
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"` // TCP when empty
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Port, p.protocol()) }

func (p Port) protocol() string {
	if p.Protocol == "" {
		return "TCP"
	}
	return p.Protocol
}

// Export is one cluster's ServiceExport of a service, with what its Service says.
type Export struct {
	Cluster network.ClusterID
	// Created is the ServiceExport's creationTimestamp: the oldest export wins a
	// conflict.
	Created time.Time
	Ports   []Port
	// Headless is set when the exported Service has no cluster IP.
	Headless bool
}

// Reason says which property of an export conflicts; the values are mcs-api's
// condition reasons.
type Reason string

// The conflicts Resolve finds.
const (
	ReasonPortConflict Reason = "PortConflict"
	ReasonTypeConflict Reason = "TypeConflict"
	// ReasonNoConflicts is the reason of a Conflict condition with status False.
	ReasonNoConflicts Reason = "NoConflicts"
)

// Reasons lists the conflict reasons, for metric labels.
var Reasons = []Reason{ReasonPortConflict, ReasonTypeConflict}

// Conflict is one export whose value of one property lost to an older export's.
type Conflict struct {
	// Cluster is the cluster of the export whose value is not used.
	Cluster network.ClusterID `json:"cluster"`
	Reason  Reason            `json:"reason"`
	// Property names what disagrees, e.g. `port "http"` or `port 80/TCP`, or `type`.
	Property string `json:"property"`
	// Value is the export's value; WinnerValue the one used, from the export in
	// Winner.
	Value       string            `json:"value"`
	Winner      network.ClusterID `json:"winner"`
	WinnerValue string            `json:"winnerValue"`
}

// Resolution is how the exports of one service merge.
type Resolution struct {
	// Ports are the clusterset service's ports, sorted by port, protocol and name.
	Ports    []Port
	Headless bool
	// Oldest is the cluster of the oldest export, whose values win every conflict
	// it takes part in; empty when there is no export.
	Oldest network.ClusterID
	// Order is the exporting clusters, oldest first.
	Order []network.ClusterID
	// Conflicts are sorted by cluster, reason and property.
	Conflicts []Conflict
}

// Resolve merges the exports of one service (one per cluster; their order does not
// matter) into the clusterset service and lists the conflicts. It does not modify
// exports.
func Resolve(exports []Export) Resolution {
	ranked := slices.Clone(exports)
	slices.SortStableFunc(ranked, func(a, b Export) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Cluster, b.Cluster)
	})
	var res Resolution
	if len(ranked) == 0 {
		return res
	}
	oldest := ranked[0]
	res.Oldest, res.Headless = oldest.Cluster, oldest.Headless
	type from struct {
		port    Port
		cluster network.ClusterID
	}
	byName := map[string]from{}
	type numProto struct {
		port  int32
		proto string
	}
	byNum := map[numProto]from{}
	for _, e := range ranked {
		res.Order = append(res.Order, e.Cluster)
		if e.Headless != oldest.Headless {
			res.Conflicts = append(res.Conflicts, Conflict{
				Cluster: e.Cluster, Reason: ReasonTypeConflict, Property: "type",
				Value: serviceType(e.Headless), Winner: oldest.Cluster, WinnerValue: serviceType(oldest.Headless),
			})
		}
		for _, p := range e.Ports {
			p.Protocol = p.protocol()
			k := numProto{p.Port, p.Protocol}
			if have, ok := byName[p.Name]; ok {
				if have.port != p {
					res.Conflicts = append(res.Conflicts, Conflict{
						Cluster: e.Cluster, Reason: ReasonPortConflict, Property: portName(p.Name),
						Value: p.String(), Winner: have.cluster, WinnerValue: have.port.String(),
					})
				}
				continue
			}
			if have, ok := byNum[k]; ok {
				res.Conflicts = append(res.Conflicts, Conflict{
					Cluster: e.Cluster, Reason: ReasonPortConflict, Property: "port " + p.String(),
					Value: portName(p.Name), Winner: have.cluster, WinnerValue: portName(have.port.Name),
				})
				continue
			}
			byName[p.Name], byNum[k] = from{p, e.Cluster}, from{p, e.Cluster}
			res.Ports = append(res.Ports, p)
		}
	}
	slices.SortFunc(res.Ports, func(a, b Port) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Name, b.Name))
	})
	slices.SortStableFunc(res.Conflicts, func(a, b Conflict) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Reason, b.Reason), cmp.Compare(a.Property, b.Property))
	})
	return res
}

func serviceType(headless bool) string {
	if headless {
		return "Headless"
	}
	return "ClusterSetIP"
}

func portName(name string) string {
	if name == "" {
		return "unnamed port"
	}
	return fmt.Sprintf("port %q", name)
}

// Condition is the Conflict condition an export is given.
type Condition struct {
	// Conflict is the condition's status: True when any export of the service
	// conflicts.
	Conflict bool
	// Reason is NoConflicts, or the reasons of the service's conflicts joined by
	// commas, as mcs-api suggests.
	Reason string
	// Message says what conflicts and whose value is used; at most MaxMessageBytes.
	Message string
}

// MaxMessageBytes bounds a condition's message; maxListed bounds the conflicts
// named in it.
const (
	MaxMessageBytes = 1024
	maxListed       = 4
)

// ConditionFor is the Conflict condition of cluster's export. The export that lost a
// conflict is told which value is used and from which cluster; the others, which
// exports conflict with theirs.
func (r Resolution) ConditionFor(cluster network.ClusterID) Condition {
	if len(r.Conflicts) == 0 {
		return Condition{Reason: string(ReasonNoConflicts), Message: "no conflicting exports of this service"}
	}
	var reasons []string
	for _, c := range r.Conflicts {
		if !slices.Contains(reasons, string(c.Reason)) {
			reasons = append(reasons, string(c.Reason))
		}
	}
	slices.Sort(reasons)
	var own, others []string
	for _, c := range r.Conflicts {
		if c.Cluster == cluster {
			own = append(own, fmt.Sprintf("%s is %s here but %s in the older export of cluster %s, which is used", c.Property, c.Value, c.WinnerValue, c.Winner))
		} else if c.Winner == cluster {
			others = append(others, fmt.Sprintf("%s is %s in cluster %s; this export's %s is used", c.Property, c.Value, c.Cluster, c.WinnerValue))
		}
	}
	var msg string
	switch {
	case len(own) > 0:
		msg = list(own)
	case len(others) > 0:
		msg = list(others)
	default:
		var clusters []string
		for _, c := range r.Conflicts {
			if !slices.Contains(clusters, string(c.Cluster)) {
				clusters = append(clusters, string(c.Cluster))
			}
		}
		msg = "the exports of cluster(s) " + list(clusters) + " conflict with older exports; the oldest export, in cluster " + string(r.Oldest) + ", wins"
	}
	return Condition{Conflict: true, Reason: strings.Join(reasons, ","), Message: truncate(msg, MaxMessageBytes)}
}

// list joins items with "; ", naming at most maxListed of them.
func list(items []string) string {
	if len(items) <= maxListed {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:maxListed], "; ") + fmt.Sprintf("; and %d more", len(items)-maxListed)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
