package app

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/clusterregistry/exportstatus"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/mcs"
)

// MCSzResponse is /debug/mcsz: in MCS mode (--mcs), the exported services whose
// exports conflict, how each was resolved, and the ServiceExport status writes.
type MCSzResponse struct {
	// Enabled says whether MCS mode is on; nothing else is set when it is off.
	Enabled bool `json:"enabled"`
	exportstatus.Status
}

// exportSource hands the registry's ServiceExports to the export-status controller.
// An export whose cluster has no such Service offers no port and takes no part.
type exportSource struct{ reg *clusterregistry.Registry }

func (s exportSource) ServiceExports(svc types.NamespacedName) []mcs.Export {
	var out []mcs.Export
	var shards map[network.ClusterID]*clusterregistry.Shard // read when needed
	for _, e := range s.reg.Exports(svc.Namespace, svc.Name) {
		if !e.HasService {
			continue
		}
		if shards == nil {
			shards = s.reg.Services(clusterregistry.ClustersetHost(svc.Namespace, svc.Name))
		}
		ports := make([]mcs.Port, len(e.Ports))
		for i, p := range e.Ports {
			ports[i] = mcs.Port{Name: p.Name, Port: p.Port, Protocol: p.Protocol}
		}
		headless := false
		if sh := shards[e.Cluster]; sh != nil {
			headless = sh.Service.Headless
		}
		out = append(out, mcs.Export{Cluster: e.Cluster, Created: e.Created, Ports: ports, Headless: headless})
	}
	return out
}

func (s exportSource) ExportedServices() []types.NamespacedName { return s.reg.ExportedServices() }

// handleMCSz serves /debug/mcsz.
func (h *Horizon) handleMCSz(w http.ResponseWriter, _ *http.Request) {
	if h.exports == nil {
		writeJSON(w, MCSzResponse{})
		return
	}
	writeJSON(w, MCSzResponse{Enabled: true, Status: h.exports.Status()})
}

// exportCollector turns the export-status controller's state into metrics.
type exportCollector struct {
	c         *exportstatus.Controller
	conflicts *prometheus.Desc
	writes    *prometheus.Desc
}

func newExportCollector(c *exportstatus.Controller) *exportCollector {
	return &exportCollector{
		c: c,
		// By reason only: namespaces and names come from remote clusters without bound.
		conflicts: prometheus.NewDesc("horizon_mcs_export_conflicts",
			"ServiceExports whose Service disagrees with an older export of the same service (the older one's value is used), by reason (PortConflict, TypeConflict).",
			[]string{"reason"}, nil),
		writes: prometheus.NewDesc("horizon_mcs_export_status_writes_total",
			"ServiceExport Conflict condition writes (--mcs-export-status), by outcome (ok, failed).", []string{"outcome"}, nil),
	}
}

func (e *exportCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- e.conflicts
	ch <- e.writes
}

func (e *exportCollector) Collect(ch chan<- prometheus.Metric) {
	st := e.c.Status()
	for _, r := range mcs.Reasons {
		ch <- prometheus.MustNewConstMetric(e.conflicts, prometheus.GaugeValue, float64(st.ConflictingExports[r]), string(r))
	}
	ch <- prometheus.MustNewConstMetric(e.writes, prometheus.CounterValue, float64(st.WritesOK), "ok")
	ch <- prometheus.MustNewConstMetric(e.writes, prometheus.CounterValue, float64(st.WritesFailed), "failed")
}

// clustersetSource is the registry as the xDS server sees it in MCS mode: the shards
// of a clusterset host carry the ports the export conflict resolution gives the
// clusterset service (mcs.Resolve), so that its clusters and assignments are those
// ports and no others.
type clustersetSource struct {
	*clusterregistry.Registry
}

// Services returns what each cluster knows of host; for a clusterset host, with
// the ports resolved (resolveShards).
func (s clustersetSource) Services(host string) map[network.ClusterID]*clusterregistry.Shard {
	shards := s.Registry.Services(host)
	if len(shards) == 0 || !clusterregistry.IsClustersetHost(host) {
		return shards
	}
	var svc types.NamespacedName
	for _, sh := range shards {
		svc = types.NamespacedName{Namespace: sh.Service.Namespace, Name: sh.Service.Name}
		break
	}
	return resolveShards(shards, mcs.Resolve(exportSource{s.Registry}.ServiceExports(svc)).Ports)
}

// resolveShards gives each shard of a clusterset host the resolved ports: a
// cluster's Service takes part in a resolved port when it has a port of that name
// and protocol, whatever its number (a number that lost a conflict is served under
// the older export's), and its endpoints of that port are served under the resolved
// number. A port whose name or protocol lost a conflict is not served from that
// cluster; a cluster left with no port is left out. The shards given are not
// modified.
func resolveShards(shards map[network.ClusterID]*clusterregistry.Shard, ports []mcs.Port) map[network.ClusterID]*clusterregistry.Shard {
	out := make(map[network.ClusterID]*clusterregistry.Shard, len(shards))
	for id, sh := range shards {
		var own []clusterregistry.ServicePort
		eps := map[int32][]clusterregistry.Endpoint{}
		for _, rp := range ports {
			for _, p := range sh.Service.Ports {
				if p.Name != rp.Name || protocolOf(p.Protocol) != rp.Protocol {
					continue
				}
				if e := sh.Endpoints[p.Port]; len(e) > 0 {
					eps[rp.Port] = e
				}
				p.Port = rp.Port
				own = append(own, p)
				break
			}
		}
		if len(own) == 0 {
			continue
		}
		svc := sh.Service
		svc.Ports = own
		out[id] = &clusterregistry.Shard{Service: svc, Endpoints: eps}
	}
	return out
}

func protocolOf(p string) string {
	if p == "" {
		return "TCP"
	}
	return p
}
