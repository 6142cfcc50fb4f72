package eds

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the xDS server's Prometheus metrics.
type metrics struct {
	connections *prometheus.GaugeVec   // by stream type and network
	pushes      prometheus.Counter     // pushes done
	pushLatency prometheus.Histogram   // change → response sent to a proxy
	nacks       *prometheus.CounterVec // by type URL
	debounce    prometheus.Histogram   // first change → push start
	build       prometheus.Histogram   // time to rebuild and hand out a push
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "horizon_xds_connections", Help: "Connected xDS streams, by stream type (ads, ads-delta, eds, cds, lds, rds) and proxy network.",
		}, []string{"type", "network"}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "horizon_xds_pushes_total", Help: "Pushes: debounced rebuilds handed to every proxy group.",
		}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "horizon_xds_push_latency_seconds", Help: "Time from the change that started a push to a response sent to a proxy.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "horizon_xds_nacks_total", Help: "Responses rejected by proxies, by type URL.",
		}, []string{"type_url"}),
		debounce: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "horizon_xds_debounce_seconds", Help: "Time from the first change of a push to the push starting.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
		build: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "horizon_xds_build_seconds", Help: "Time to rebuild the changed resources of every group in a push.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "horizon_xds_cache_hits_total", Help: "ClusterLoadAssignments taken from the cache of built resources.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "horizon_xds_cache_misses_total", Help: "ClusterLoadAssignments built because the cache had none for their inputs.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.pushes, m.pushLatency, m.nacks, m.debounce, m.build, m.cacheHits, m.cacheMisses)
	}
	return m
}
