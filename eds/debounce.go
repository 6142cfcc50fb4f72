package eds

import "time"

// debouncer decides when changes are pushed. A change that follows a quiet
// period — no change for `after` — is pushed at once, so that a lone change is
// not held back by the debounce at all. A change that comes within `after` of the
// previous one is batched: the push waits until `after` passes with no change,
// but never past `max` after the first change it carries. A burst of changes thus
// costs one push for its first change and one for the rest, and sustained churn a
// push at least every `max`.
//
// It is pure logic over the times it is given: the caller owns the clock and the
// timer. Not safe for concurrent use; the push loop owns it.
type debouncer struct {
	after, max time.Duration
	first      time.Time // the first change not yet pushed; zero when none is pending
	last       time.Time // the last change seen; zero before the first
}

// change records a change at now and returns how long to wait before pushing.
func (d *debouncer) change(now time.Time) time.Duration {
	quiet := d.last.IsZero() || now.Sub(d.last) >= d.after
	d.last = now
	if d.first.IsZero() {
		d.first = now
		if quiet {
			return 0
		}
	}
	wait := d.after
	if left := d.first.Add(d.max).Sub(now); left < wait {
		wait = left
	}
	return max(wait, 0)
}

// pushed records that the pending changes were pushed, and returns when the
// first of them was seen.
func (d *debouncer) pushed() (first time.Time) {
	first, d.first = d.first, time.Time{}
	return first
}
