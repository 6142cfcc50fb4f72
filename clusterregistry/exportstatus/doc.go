// Package exportstatus resolves the conflicts between the exports of every exported
// service (mcs.Resolve), keeps the result for status, debug output and metrics, and,
// when told to, writes each ServiceExport's Conflict condition to its cluster.
//
// Writes are server-side apply patches of the ServiceExport's status subresource
// under the field manager "horizon", holding only the Conflict condition: they need
// nothing but patch on serviceexports/status, and leave other controllers'
// conditions alone. An export is written when its condition differs from the one
// last written for it (once after start), at most Options.QPS a second over all
// clusters; a failed write is counted, logged and retried with a per-export
// exponential backoff (1s to 5m), and never holds up serving.
//
// Concurrency: Controller is safe for concurrent use. Changed and ResyncAll only
// queue work; Run owns two goroutines — one resolves queued services, one writes
// conditions — and joins them before it returns. The state both share is guarded by
// Controller.mu.
package exportstatus
