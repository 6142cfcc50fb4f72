package xdsserver

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a request is refused, the reason label of
// horizon_xds_refused_requests_total.
const (
	reasonNames  = "names"
	reasonTypes  = "types"
	reasonNoNode = "no_node"
	// Limits.
	reasonStreams    = "streams"     // MaxStreams
	reasonStreamRate = "stream_rate" // the new-stream bucket
	// Refused by gRPC (statsHandler).
	reasonMessageSize = "message_size" // over the server's MaxRecvMsgSize
	reasonMalformed   = "malformed"    // not decodable
)

// metrics are the protocol's Prometheus metrics.
type metrics struct {
	connections *prometheus.GaugeVec   // by stream type and the group's MetricLabel
	pushLatency prometheus.Histogram   // change → response sent to a proxy
	nacks       *prometheus.CounterVec // by type URL: typeLabel's fixed set
	refused     *prometheus.CounterVec // requests refused, by reason (the reason* constants)
	throttled   prometheus.Counter     // requests that waited for their stream's request bucket
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "horizon_xds_connections", Help: "Connected xDS streams, by stream type (ads, ads-delta, eds, cds, lds, rds) and proxy network.",
		}, []string{"type", "network"}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "horizon_xds_push_latency_seconds", Help: "Time from the change that started a push to a response sent to a proxy.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "horizon_xds_nacks_total", Help: "Responses rejected by proxies, by type URL (a type not served counts as other).",
		}, []string{"type_url"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "horizon_xds_refused_requests_total", Help: "xDS requests refused, by reason (names: names subscribed per stream; types: type URLs per stream; no_node: a first request or Fetch without a node; streams: streams at once; stream_rate: new streams per second; message_size: a request over the size limit; malformed: a request gRPC could not decode).",
		}, []string{"reason"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "horizon_xds_throttled_requests_total", Help: "xDS requests (other than ACKs and NACKs) read late because their stream sent them faster than its request rate allows.",
		}),
	}
	for _, r := range []string{reasonNames, reasonTypes, reasonNoNode, reasonStreams, reasonStreamRate, reasonMessageSize, reasonMalformed} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.pushLatency, m.nacks, m.refused, m.throttled)
	}
	return m
}
