package meshsource_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network/meshsource"
)

// fileOptions watch file with a short debounce; the resync is long so that the
// directory watch alone must see every edit.
func fileOptions(file string) meshsource.Options {
	return meshsource.Options{File: file, Debounce: 10 * time.Millisecond, Resync: time.Hour}
}

// writeFile replaces path's content at once (a new file renamed over it), as
// editors and kubectl-made volumes do: an in-place write can be read half done,
// which is a different case from the ones these tests are about.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestFileSource(t *testing.T) {
	checkLeaks(t)
	file := filepath.Join(t.TempDir(), "meshNetworks.yaml")
	h := start(t, fileOptions(file))
	if st := h.src.Status(); st.Source != "file "+file {
		t.Errorf("status source %q", st.Source)
	}

	// A missing file is an empty configuration, delivered as the first one.
	h.waitApplied(t, 1)

	writeFile(t, file, configA)
	h.waitApplied(t, 2, "network1", "network2")

	// An invalid edit is kept out; the last good configuration stays.
	writeFile(t, file, configBad)
	h.waitRejected(t, configBadError, 2, "network1", "network2")

	// Writing the same invalid content again changes nothing; the fix is accepted.
	writeFile(t, file, configBad)
	writeFile(t, file, configB)
	h.waitApplied(t, 3, "network1", "network3")

	// The same configuration written differently is not a change.
	writeFile(t, file, "# reformatted\n"+configB)
	writeFile(t, file, configC)
	h.waitApplied(t, 4, "network4")

	// Removing the file empties the configuration.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	h.waitApplied(t, 5)
}

// configMapVolume lays out a directory as the kubelet does for a ConfigMap volume:
// each version in its own timestamped directory, ..data a symlink to the current one,
// and each key a symlink through ..data.
type configMapVolume struct {
	t       *testing.T
	dir     string
	version int
	current string
}

func newConfigMapVolume(t *testing.T, key, content string) *configMapVolume {
	v := &configMapVolume{t: t, dir: t.TempDir()}
	v.update(key, content)
	if err := os.Symlink(filepath.Join("..data", key), filepath.Join(v.dir, key)); err != nil {
		t.Fatal(err)
	}
	return v
}

// update writes a new version and swaps it in atomically: a new directory, a
// ..data_tmp symlink to it renamed over ..data, then the old directory removed.
func (v *configMapVolume) update(key, content string) {
	t := v.t
	t.Helper()
	v.version++
	next := fmt.Sprintf("..2025_01_01_00_00_%02d.%09d", v.version, v.version)
	if err := os.Mkdir(filepath.Join(v.dir, next), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(v.dir, next, key), content)
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(next, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if v.current != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.current)); err != nil {
			t.Fatal(err)
		}
	}
	v.current = next
}

func TestFileSourceConfigMapVolumeSwap(t *testing.T) {
	checkLeaks(t)
	vol := newConfigMapVolume(t, "meshNetworks", configA)
	h := start(t, fileOptions(filepath.Join(vol.dir, "meshNetworks")))
	h.waitApplied(t, 1, "network1", "network2")

	vol.update("meshNetworks", configB)
	h.waitApplied(t, 2, "network1", "network3")

	vol.update("meshNetworks", configBad)
	h.waitRejected(t, configBadError, 2, "network1", "network3")

	vol.update("meshNetworks", configC)
	h.waitApplied(t, 3, "network4")
}

func TestFileSourceInvalidAtStart(t *testing.T) {
	checkLeaks(t)
	file := filepath.Join(t.TempDir(), "meshNetworks")
	writeFile(t, file, configBad)
	h := start(t, fileOptions(file))
	// Synced, with nothing in force and the reason in the status.
	h.waitRejected(t, configBadError, 0)

	writeFile(t, file, configA)
	h.waitApplied(t, 1, "network1", "network2")
}

// A directory that does not exist yet cannot be watched: the source reads an empty
// configuration, retries the watch every resync, and then sees the file.
func TestFileSourceDirectoryAppearsLater(t *testing.T) {
	checkLeaks(t)
	dir := filepath.Join(t.TempDir(), "config")
	file := filepath.Join(dir, "meshNetworks")
	opts := fileOptions(file)
	opts.Resync = 20 * time.Millisecond
	h := start(t, opts)
	h.waitApplied(t, 1)

	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, configA)
	h.waitApplied(t, 2, "network1", "network2")

	// Once watched, edits are seen; an unreadable path is recorded, not applied.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(file, 0o755); err != nil { // reading a directory fails
		t.Fatal(err)
	}
	kubetest.Eventually(t, 10*time.Second, func() error {
		if st := h.src.Status(); st.Rejected != "read meshNetworks file: read "+file+": is a directory" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, configA)
	// The configuration is in force again and the rejection cleared. (The source may
	// or may not have seen the file missing between the edits — an empty, valid
	// configuration — so the generation is not fixed here.)
	kubetest.Eventually(t, 10*time.Second, func() error {
		st := h.src.Status()
		names := fmt.Sprint(h.src.Current().Names())
		if st.Rejected != "" || names != "[network1 network2]" {
			return fmt.Errorf("status %+v, networks %s", st, names)
		}
		return nil
	})
}
