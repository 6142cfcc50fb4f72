package xdsserver

// Regroup asks Groups again for the group of every stream that has joined one, and
// moves each stream whose group is now another to that group: it is then sent what
// differs between what it holds and the new group's snapshot, at once. Call it when
// what decides a node's group changed (a node's view may name a cluster whose
// network became known). A stream whose node is now refused, or whose new group
// cannot be made (a group cap), stays where it is. It returns how many streams
// moved. groups, if not nil, is asked instead of Options.Groups (e.g. to leave
// out what Options.Groups counts for new proxies). Regroup must not be called
// while the Groups would block on the caller.
func (s *Server) Regroup(groups Groups) int {
	if groups == nil {
		groups = s.groups
	}
	s.streamsMu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.streamsMu.Unlock()
	moved := 0
	for _, st := range streams {
		if st.regroup(groups) {
			moved++
		}
	}
	return moved
}

func (st *stream) regroup(groups Groups) bool {
	st.mu.Lock()
	node, old, closed := st.node, st.group, st.closed
	st.mu.Unlock()
	if node == nil || old == nil || closed {
		return false
	}
	g, err := groups.Group(node, func(g Group) {
		if g != old {
			g.Feed().attach(st)
		}
	})
	if err != nil || g == old {
		return false
	}
	st.mu.Lock()
	if st.closed || st.group != old {
		// closeStream has read the old group (or another Regroup moved the
		// stream): it does not know of this attachment.
		st.mu.Unlock()
		g.Feed().detach(st)
		return false
	}
	st.group, st.feed = g, g.Feed()
	if st.counted {
		st.s.metrics.connections.WithLabelValues(st.kind, old.MetricLabel()).Dec()
		st.s.metrics.connections.WithLabelValues(st.kind, g.MetricLabel()).Inc()
	}
	for _, sb := range st.subs {
		sb.seen = "" // compare with the new group's resources
	}
	st.kickLocked()
	st.mu.Unlock()
	old.Feed().detach(st)
	return true
}
