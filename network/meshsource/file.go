package meshsource

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// runFile watches the file's directory, not the file: a ConfigMap volume replaces its
// files by swapping the ..data symlink, which a watch on the file itself would miss.
// Any event in the directory schedules a read once the directory has been quiet for
// Debounce; a read every Resync catches anything the watch missed.
func (s *watcher) runFile(ctx context.Context) {
	dir := filepath.Dir(s.file)
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Error("watch configuration directory failed; reading it every resync instead", "what", s.what, "dir", dir, "error", err)
	} else {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	watching := false
	watch := func() {
		if w == nil || watching {
			return
		}
		if err := w.Add(dir); err != nil {
			s.log.Warn("watch configuration directory failed; retrying every resync", "what", s.what, "dir", dir, "error", err)
			return
		}
		watching = true
	}

	watch()
	s.readFile()
	s.synced.Store(true)

	resync := time.NewTicker(s.resync)
	defer resync.Stop()
	quiet := time.NewTimer(0)
	<-quiet.C
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				watching = false // the watch went with the directory
			}
			quiet.Reset(s.debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Events may have been lost (queue overflow): read again.
			s.log.Warn("watch configuration directory", "what", s.what, "dir", dir, "error", err)
			quiet.Reset(s.debounce)
		case <-quiet.C:
			s.readFile()
		case <-resync.C:
			watch()
			s.readFile()
		}
	}
}

// readFile reads the file and applies it; a missing file is an empty configuration.
func (s *watcher) readFile() {
	data, err := os.ReadFile(s.file)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = nil, nil
	}
	if err != nil {
		s.readFailed(fmt.Errorf("read %s file: %w", s.what, err))
		return
	}
	s.apply(data)
}
