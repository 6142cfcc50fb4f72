package app

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app/debugauth"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/network/gatewaysource"
	"github.com/horizon-mesh/horizon/network/meshsource"
	"github.com/horizon-mesh/horizon/secrets"
)

// ClusterzResponse is /debug/clusterz: every cluster and every remote Secret key.
type ClusterzResponse struct {
	Clusters []clusterregistry.ClusterStatus `json:"clusters"`
	Secrets  []secrets.KeyStatus             `json:"secrets"`
	// MeshConfig says where the discovery selectors come from and whether the last
	// edit was rejected.
	MeshConfig meshsource.Status `json:"meshConfig"`
}

// NetworkzResponse is /debug/networkz: the meshNetworks in force, how it got there,
// and the gateways resolved from it and from labelled Services.
type NetworkzResponse struct {
	MeshNetworks       json.RawMessage        `json:"meshNetworks"`
	Status             meshsource.Status      `json:"status"`
	Gateways           []network.Gateway      `json:"gateways"`
	PassthroughServers []gatewaysource.Server `json:"passthroughServers"`
	GatewayProblems    []string               `json:"gatewayProblems,omitempty"`
	// Notes is what people should know about the networks in force, e.g. a network
	// whose gateway address is still the placeholder 0.0.0.0.
	Notes []string `json:"notes,omitempty"`
}

// EndpointzResponse is /debug/endpointz?host=…: what each cluster knows of the host
// (with each endpoint's resolved network), and what a sidecar on each network is sent
// per service port.
type EndpointzResponse struct {
	Host     string                               `json:"host"`
	Clusters map[network.ClusterID]EndpointzShard `json:"clusters"`
	Views    map[int32]map[string][]string        `json:"views"`
}

// EndpointzShard is what one cluster knows of the host.
type EndpointzShard struct {
	Service   clusterregistry.Service       `json:"service"`
	Endpoints map[int32][]EndpointzEndpoint `json:"endpoints"`
}

// EndpointzEndpoint is one endpoint of a shard, with the network it resolved to.
type EndpointzEndpoint struct {
	clusterregistry.Endpoint
	ResolvedNetwork network.NetworkID `json:"resolvedNetwork,omitempty"`
}

// httpMux serves health, readiness and metrics to every caller, and everything else
// — the debug endpoints, and any path added later — through debug, which lets
// loopback callers through and others as --debug-access says. No kubeconfig, token
// or key is reachable from any of them: they show statuses, which never hold
// credentials.
func (h *Horizon) httpMux(reg *prometheus.Registry, debug *debugauth.Filter, withPprof bool) *http.ServeMux {
	open := http.NewServeMux()
	open.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	open.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := h.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	open.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux := http.NewServeMux()
	open.Handle("/", debug.Wrap(mux))
	mux.HandleFunc("/debug/clusterz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, ClusterzResponse{Clusters: h.registry.Clusters(), Secrets: h.secrets.Status(), MeshConfig: h.meshCfg.Status()})
	})
	mux.HandleFunc("/debug/networkz", func(w http.ResponseWriter, _ *http.Request) {
		mn, err := protojson.Marshal(h.mesh.Current().MeshNetworks())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, NetworkzResponse{
			MeshNetworks: mn, Status: h.mesh.Status(), Gateways: h.xds.Gateways(),
			PassthroughServers: h.gateways.Servers(), GatewayProblems: h.gateways.Problems(),
			Notes: h.mesh.Current().Notes(),
		})
	})
	mux.HandleFunc("/debug/endpointz", func(w http.ResponseWriter, r *http.Request) {
		host := r.URL.Query().Get("host")
		if host == "" {
			http.Error(w, "query parameter host is required, e.g. ?host=helloworld.sample.svc.cluster.local; known hosts: "+
				strings.Join(h.registry.Hosts(), " "), http.StatusBadRequest)
			return
		}
		nets := h.mesh.Current()
		resp := EndpointzResponse{Host: host, Clusters: map[network.ClusterID]EndpointzShard{}, Views: map[int32]map[string][]string{}}
		ports := map[int32]bool{}
		for id, shard := range h.registry.Services(host) {
			out := EndpointzShard{Service: shard.Service, Endpoints: map[int32][]EndpointzEndpoint{}}
			for port, eps := range shard.Endpoints {
				for _, ep := range eps {
					out.Endpoints[port] = append(out.Endpoints[port], EndpointzEndpoint{
						Endpoint: ep, ResolvedNetwork: nets.EndpointNetwork(ep.Network, ep.Cluster, ep.Address),
					})
				}
			}
			for _, p := range shard.Service.Ports {
				ports[p.Port] = true
			}
			resp.Clusters[id] = out
		}
		if len(resp.Clusters) == 0 {
			http.Error(w, "no cluster knows host "+host, http.StatusNotFound)
			return
		}
		for p := range ports {
			resp.Views[p] = h.xds.EndpointView(host, p, nets.Names())
		}
		writeJSON(w, resp)
	})
	mux.HandleFunc("/debug/mcsz", h.handleMCSz)
	mux.HandleFunc("/debug/syncz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, h.xds.Proxies())
	})
	mux.HandleFunc("/debug/config_dump", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("proxy")
		if id == "" {
			http.Error(w, "query parameter proxy (a node ID from /debug/syncz) is required", http.StatusBadRequest)
			return
		}
		dump, ok, err := h.xds.ConfigDump(id)
		switch {
		case !ok:
			http.Error(w, "no connected proxy "+id, http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			writeJSON(w, dump)
		}
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return open
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// statusCollector turns the components' statuses into metrics at scrape time.
type statusCollector struct {
	h          *Horizon
	clusters   *prometheus.Desc
	syncTime   *prometheus.Desc
	timedOut   *prometheus.Desc
	secretKeys *prometheus.Desc
	secretEvts *prometheus.Desc
	reloads    *prometheus.Desc
	rejections *prometheus.Desc
	refusals   *prometheus.Desc
	credExpiry *prometheus.Desc
	credStates *prometheus.Desc
	dnsLookups *prometheus.Desc
	dnsFailed  *prometheus.Desc
	dnsNames   *prometheus.Desc
	dnsRefused *prometheus.Desc
	requests   *prometheus.Desc
}

func newStatusCollector(h *Horizon) *statusCollector {
	return &statusCollector{
		h:          h,
		clusters:   prometheus.NewDesc("horizon_clusters", "Managed clusters by sync state.", []string{"state"}, nil),
		syncTime:   prometheus.NewDesc("horizon_cluster_sync_duration_seconds", "How long each cluster's initial sync took (synced clusters).", []string{"cluster"}, nil),
		timedOut:   prometheus.NewDesc("horizon_cluster_sync_timed_out", "1 if the cluster did not sync within --remote-cluster-timeout and has not synced since.", []string{"cluster"}, nil),
		secretKeys: prometheus.NewDesc("horizon_remote_secret_keys", "Remote Secret keys by outcome now.", []string{"outcome"}, nil),
		secretEvts: prometheus.NewDesc("horizon_remote_secret_events_total", "Remote Secret key events by outcome.", []string{"outcome"}, nil),
		reloads:    prometheus.NewDesc("horizon_mesh_networks_reloads_total", "meshNetworks configurations applied.", nil, nil),
		rejections: prometheus.NewDesc("horizon_mesh_networks_rejections_total", "meshNetworks edits rejected.", nil, nil),
		refusals: prometheus.NewDesc("horizon_remote_kubeconfig_refusals_total",
			"Remote kubeconfigs refused, by the kind of field that made them unusable; each refused kubeconfig counts once.", []string{"field"}, nil),
		credExpiry: prometheus.NewDesc("horizon_remote_credential_expiry_timestamp_seconds",
			"When the credential of each remote cluster expires (token exp claim or client certificate NotAfter), in seconds since the epoch; absent when it cannot be read.",
			[]string{"cluster"}, nil),
		credStates: prometheus.NewDesc("horizon_remote_credentials",
			"Remote credentials by state: valid, expiring (within --credential-expiry-warning), expired, unknown.", []string{"state"}, nil),
		dnsLookups: prometheus.NewDesc("horizon_gateway_dns_lookups_total", "DNS look-ups of gateway names.", nil, nil),
		dnsFailed:  prometheus.NewDesc("horizon_gateway_dns_lookup_failures_total", "DNS look-ups of gateway names that failed (the previous answer is kept).", nil, nil),
		dnsNames:   prometheus.NewDesc("horizon_gateway_dns_names", "Gateway DNS names resolved and cached.", nil, nil),
		dnsRefused: prometheus.NewDesc("horizon_gateway_dns_names_refused_total",
			"Look-ups of a gateway name left unresolved because --gateway-dns-max-names names are cached (asked again at each push).", nil, nil),
		requests: prometheus.NewDesc("horizon_remote_api_requests_total",
			"Requests sent to each watched cluster's API server (the config cluster's included), by verb (list, watch, get, other) and outcome (2xx, 3xx, 4xx, 5xx, error: no response).",
			[]string{"cluster", "verb", "code"}, nil),
	}
}

func (s *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.clusters, s.syncTime, s.timedOut, s.secretKeys, s.secretEvts, s.reloads, s.rejections,
		s.refusals, s.credExpiry, s.credStates, s.dnsLookups, s.dnsFailed, s.dnsNames, s.dnsRefused, s.requests} {
		ch <- d
	}
}

func (s *statusCollector) Collect(ch chan<- prometheus.Metric) {
	states := map[clusterregistry.SyncState]int{clusterregistry.StatePending: 0, clusterregistry.StateSynced: 0,
		clusterregistry.StateError: 0, clusterregistry.StateTimedOut: 0, clusterregistry.StateStale: 0}
	for _, cl := range s.h.registry.Clusters() {
		states[cl.State]++
		if cl.State == clusterregistry.StateSynced {
			ch <- prometheus.MustNewConstMetric(s.syncTime, prometheus.GaugeValue, cl.SyncDuration.Seconds(), string(cl.ID))
		}
		timedOut := 0.0
		if cl.State == clusterregistry.StateTimedOut {
			timedOut = 1
		}
		ch <- prometheus.MustNewConstMetric(s.timedOut, prometheus.GaugeValue, timedOut, string(cl.ID))
		// Cluster IDs are bounded by --remote-max-clusters, verbs and codes are fixed sets.
		for _, verb := range clusterregistry.RequestVerbs {
			for _, code := range clusterregistry.RequestCodes {
				if n := cl.APIRequests[verb][code]; n > 0 {
					ch <- prometheus.MustNewConstMetric(s.requests, prometheus.CounterValue, float64(n), string(cl.ID), string(verb), string(code))
				}
			}
		}
	}
	for state, n := range states {
		ch <- prometheus.MustNewConstMetric(s.clusters, prometheus.GaugeValue, float64(n), string(state))
	}
	keys := map[secrets.KeyState]int{}
	creds := map[secrets.CredentialState]int{}
	expiries := map[network.ClusterID]bool{}
	for _, k := range s.h.secrets.Status() {
		keys[k.State]++
		if k.CredentialState == "" {
			continue // no credential of this key was handed to the registry
		}
		creds[k.CredentialState]++
		// One series per remote cluster: the controller hands each cluster ID to the
		// registry from one key only, and at most --remote-max-clusters of them.
		if !k.CredentialExpiry.IsZero() && !expiries[k.Cluster] {
			expiries[k.Cluster] = true
			ch <- prometheus.MustNewConstMetric(s.credExpiry, prometheus.GaugeValue, float64(k.CredentialExpiry.UnixNano())/1e9, string(k.Cluster))
		}
	}
	for _, state := range secrets.CredentialStates {
		ch <- prometheus.MustNewConstMetric(s.credStates, prometheus.GaugeValue, float64(creds[state]), string(state))
	}
	for _, state := range []secrets.KeyState{secrets.KeyAccepted, secrets.KeyRejected, secrets.KeyDuplicate, secrets.KeyIgnored, secrets.KeyTooMany, secrets.KeyTooManyClusters} {
		ch <- prometheus.MustNewConstMetric(s.secretKeys, prometheus.GaugeValue, float64(keys[state]), string(state))
	}
	events := s.h.secrets.Events()
	for _, outcome := range slices.Sorted(maps.Keys(events)) {
		ch <- prometheus.MustNewConstMetric(s.secretEvts, prometheus.CounterValue, float64(events[outcome]), outcome)
	}
	refusals := s.h.secrets.Refusals()
	for _, kind := range secrets.RefusalKinds {
		ch <- prometheus.MustNewConstMetric(s.refusals, prometheus.CounterValue, float64(refusals[kind]), string(kind))
	}
	st := s.h.mesh.Status()
	ch <- prometheus.MustNewConstMetric(s.reloads, prometheus.CounterValue, float64(st.Generation))
	ch <- prometheus.MustNewConstMetric(s.rejections, prometheus.CounterValue, float64(st.Rejections))
	dns := s.h.resolver.Stats()
	ch <- prometheus.MustNewConstMetric(s.dnsLookups, prometheus.CounterValue, float64(dns.Lookups))
	ch <- prometheus.MustNewConstMetric(s.dnsFailed, prometheus.CounterValue, float64(dns.Failures))
	ch <- prometheus.MustNewConstMetric(s.dnsNames, prometheus.GaugeValue, float64(dns.Names))
	ch <- prometheus.MustNewConstMetric(s.dnsRefused, prometheus.CounterValue, float64(dns.Refused))
}

func newMetricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
