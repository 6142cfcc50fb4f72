package main

import (
	"testing"
	"time"
)

func TestHistogramQuantile(t *testing.T) {
	const metrics = `# HELP horizon_xds_push_latency_seconds x
horizon_xds_push_latency_seconds_bucket{le="0.005"} 10
horizon_xds_push_latency_seconds_bucket{le="0.01"} 10
horizon_xds_push_latency_seconds_bucket{le="0.02"} 20
horizon_xds_push_latency_seconds_bucket{le="+Inf"} 20
horizon_xds_push_latency_seconds_sum 0.2
horizon_xds_push_latency_seconds_count 20
horizon_xds_pushes_total 3
`
	before := parseBuckets([]byte(`horizon_xds_push_latency_seconds_bucket{le="0.005"} 10
horizon_xds_push_latency_seconds_bucket{le="0.01"} 10
horizon_xds_push_latency_seconds_bucket{le="0.02"} 10
horizon_xds_push_latency_seconds_bucket{le="+Inf"} 10
`), "horizon_xds_push_latency_seconds")
	all := parseBuckets([]byte(metrics), "horizon_xds_push_latency_seconds")
	if len(all) != 4 || all[0.02] != 20 {
		t.Fatalf("parsed %v, want 4 buckets, 20 up to 0.02", all)
	}
	for _, tc := range []struct {
		name string
		b    buckets
		q    float64
		want time.Duration
	}{
		{"all, p50: the first bucket's bound", all, 0.5, 5 * time.Millisecond},
		{"all, p75: halfway through the third bucket", all, 0.75, 15 * time.Millisecond},
		{"since before, p50: halfway through the third bucket", all.since(before), 0.5, 15 * time.Millisecond},
		{"since before, p99", all.since(before), 0.99, 19900 * time.Microsecond},
		{"no observations", all.since(all), 0.99, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.b.quantile(tc.q); (got - tc.want).Abs() > time.Microsecond {
				t.Errorf("quantile(%g) = %s, want %s", tc.q, got, tc.want)
			}
		})
	}
}
