package clusterregistry

import (
	"context"
	"errors"
	"net"
	"sync"
)

// errDialerClosed is returned for dials after the cluster stopped.
var errDialerClosed = errors.New("cluster stopped")

// closingDialer dials a cluster's connections and closes them all when the cluster
// stops. Unlike a plain tracking dialer it refuses dials after Close, and closes a
// connection whose dial finished after Close, so no connection outlives the
// cluster however requests and stop interleave.
type closingDialer struct {
	dial func(ctx context.Context, network, address string) (net.Conn, error)

	mu     sync.Mutex
	closed bool                  // guarded by mu
	conns  map[*trackedConn]bool // guarded by mu
}

func newClosingDialer(dial func(ctx context.Context, network, address string) (net.Conn, error)) *closingDialer {
	return &closingDialer{dial: dial, conns: map[*trackedConn]bool{}}
}

// DialContext dials and tracks the connection.
func (d *closingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, errDialerClosed
	}
	conn, err := d.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: conn, d: d}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		conn.Close()
		return nil, errDialerClosed
	}
	d.conns[tc] = true
	return tc, nil
}

// Close closes every connection and refuses new ones.
func (d *closingDialer) Close() {
	d.mu.Lock()
	d.closed = true
	conns := d.conns
	d.conns = map[*trackedConn]bool{}
	d.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	d    *closingDialer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.d.mu.Lock()
		delete(c.d.conns, c)
		c.d.mu.Unlock()
	})
	return c.Conn.Close()
}
