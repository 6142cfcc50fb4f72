package eds

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the push loop's Prometheus metrics; the protocol's (connections,
// push latency, NACKs) are package xdsserver's.
type metrics struct {
	pushes      prometheus.Counter   // pushes done
	debounce    prometheus.Histogram // first change → push start
	build       prometheus.Histogram // time to rebuild and hand out a push
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
	groups      prometheus.Gauge       // proxy groups kept
	refused     *prometheus.CounterVec // views refused, by reason (admit.go's refused* constants)
	invalidDist prometheus.Counter     // services seen with an unrecognized traffic distribution
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "horizon_xds_pushes_total", Help: "Pushes: debounced rebuilds handed to every proxy group.",
		}),
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
		groups: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "horizon_xds_groups", Help: "Proxy groups (distinct views) served.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "horizon_xds_refused_views_total", Help: "Proxy requests refused for their view, by reason (unknown_network, labels, group_limit, not_ready).",
		}, []string{"reason"}),
		invalidDist: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "horizon_invalid_traffic_distribution_total", Help: "Services seen with a traffic distribution (spec.trafficDistribution or the networking.istio.io/traffic-distribution annotation) Horizon does not recognize, counted once per service and value; such a value counts as unset.",
		}),
	}
	for _, r := range []string{refusedUnknownNetwork, refusedLabels, refusedGroupLimit, refusedNotReady} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.pushes, m.debounce, m.build, m.cacheHits, m.cacheMisses, m.groups, m.refused, m.invalidDist)
	}
	return m
}
