// Package mcs holds the Multi-Cluster Services (KEP-1645) rules that are pure
// functions: how the exports of one service by several clusters merge into the one
// clusterset service, which exports conflict, and the Conflict condition each export
// is given.
//
// The rules: exports are ranked oldest first by the ServiceExport's
// creationTimestamp, ties broken by cluster ID. The clusterset service has the union
// of the exports' ports, merged by name first, then by (port, protocol); a port that
// disagrees with one already merged from an older export (same name but another
// number or protocol, or the same number and protocol under another name) is a
// PortConflict and the older export's port is used. Headlessness is a service-wide
// property: an export that disagrees with the oldest is a TypeConflict and the
// oldest's is used. When any export conflicts, every export of the service carries a
// Conflict condition with status True, as the KEP asks; otherwise False.
//
// Concurrency: everything here is immutable data or pure functions, safe for
// concurrent use.
package mcs
