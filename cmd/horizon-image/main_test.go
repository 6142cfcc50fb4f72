package main

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// build runs the command as `make image` does, into dir, and returns the digest it
// prints.
func build(t *testing.T, dir string, extra ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args := append([]string{"-o", filepath.Join(dir, "oci"), "--tarball", filepath.Join(dir, "image.tar")}, extra...)
	if err := run(t.Context(), args, &stdout, &stderr); err != nil {
		t.Fatalf("horizon-image %q: %v\n%s", args, err, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// TestImage builds the image twice from scratch — horizon compiled each time — and
// wants the same digest and the same layout bytes; then checks what the image holds
// and runs the binary taken out of its layer.
func TestImage(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	dirs := []string{t.TempDir(), t.TempDir()}
	d1, d2 := build(t, dirs[0]), build(t, dirs[1])
	if !strings.HasPrefix(d1, "sha256:") || d1 != d2 {
		t.Fatalf("two builds gave digests %q and %q, want the same", d1, d2)
	}
	for _, f := range []string{"index.json", "oci-layout"} {
		a, errA := os.ReadFile(filepath.Join(dirs[0], "oci", f))
		b, errB := os.ReadFile(filepath.Join(dirs[1], "oci", f))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds (%v, %v)", f, errA, errB)
		}
	}

	img := layoutImage(t, filepath.Join(dirs[0], "oci"))
	if got, err := img.Digest(); err != nil || got.String() != d1 {
		t.Fatalf("the layout's image is %v (%v), the command printed %s", got, err, d1)
	}
	tagged, err := name.NewTag("horizon:latest")
	if err != nil {
		t.Fatal(err)
	}
	fromTar, err := tarball.ImageFromPath(filepath.Join(dirs[0], "image.tar"), &tagged)
	if err != nil {
		t.Fatal(err)
	}
	// The tarball is in the container engines' format, whose manifest differs; its
	// config is the same.
	want, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fromTar.ConfigName(); err != nil || got != want {
		t.Errorf("the tarball's image config is %v (%v), want %s", got, err, want)
	}

	mt, err := img.MediaType()
	if err != nil || mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %q (%v), want %q", mt, err, types.OCIManifestSchema1)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (non-root, numeric)", cf.Config.User)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/horizon"}) || len(cf.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [/horizon] and no cmd", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !cf.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("created %s, want the epoch", cf.Created.Time)
	}
	for _, h := range cf.History {
		if !h.Created.Time.Equal(time.Unix(0, 0)) {
			t.Errorf("history entry created %s, want the epoch", h.Created.Time)
		}
	}

	// One layer holding /horizon alone: no shell, no other file.
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers (%v), want one", len(layers), err)
	}
	if lmt, err := layers[0].MediaType(); err != nil || lmt != types.OCILayer {
		t.Errorf("layer media type %q (%v), want %q", lmt, err, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	bin := filepath.Join(t.TempDir(), "horizon")
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name != "horizon" {
			continue
		}
		if h.Typeflag != tar.TypeReg || h.Mode != 0o755 || h.Uid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("/horizon: type %c mode %o uid %d mtime %s; want a regular file, 0755, root's, at the epoch", h.Typeflag, h.Mode, h.Uid, h.ModTime)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(names, []string{"horizon"}) {
		t.Fatalf("the layer holds %q, want horizon alone (no shell, no base image)", names)
	}

	checkStatic(t, bin)
	if runtime.GOOS != "linux" {
		return
	}
	out, err := exec.CommandContext(t.Context(), bin, "help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "horizon serve") {
		t.Errorf("the image's horizon help: %v\n%s", err, out)
	}
}

func layoutImage(t *testing.T, dir string) v1.Image {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("the layout's index lists %d manifests, want one", len(m.Manifests))
	}
	if ref := m.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; ref != "latest" {
		t.Errorf("the layout names the image %q, want latest", ref)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// checkStatic wants bin statically linked (no program interpreter, no shared
// libraries) and built without cgo, with -trimpath and without VCS stamps.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a program interpreter: it is not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %q", libs)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" || settings["vcs"] != "" {
		t.Errorf("build settings %v, want CGO_ENABLED=0, -trimpath and no vcs", settings)
	}
	if info.Path != horizonPackage {
		t.Errorf("the binary is %s, want %s", info.Path, horizonPackage)
	}
}

// TestImageChecksInput checks the refusals that come before any build.
func TestImageChecksInput(t *testing.T) {
	for _, tc := range []struct {
		epoch string
		want  time.Time
		err   bool
	}{
		{"", time.Unix(0, 0), false},
		{"1700000000", time.Unix(1700000000, 0), false},
		{"-1", time.Time{}, true},
		{"yesterday", time.Time{}, true},
	} {
		got, err := sourceDateEpoch(tc.epoch)
		if (err != nil) != tc.err || !got.Equal(tc.want) {
			t.Errorf("sourceDateEpoch(%q) = %s, %v; want %s, error %v", tc.epoch, got, err, tc.want, tc.err)
		}
		if err != nil && !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
			t.Errorf("sourceDateEpoch(%q): error %q does not name SOURCE_DATE_EPOCH", tc.epoch, err)
		}
	}

	dir := t.TempDir()
	keep := filepath.Join(dir, "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", dir, "--binary", keep}, "not an OCI layout"},
		{[]string{"--tag", "Not A Tag", "--binary", keep}, "--tag"},
		{[]string{"-o", filepath.Join(dir, "out"), "--binary", keep}, "not an ELF executable"},
		{[]string{"-o", filepath.Join(dir, "out"), "--binary", filepath.Join(dir, "missing")}, "--binary"},
		{[]string{"stray"}, "unexpected arguments"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), tc.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("horizon-image %q: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a refused --output removed what was there: %v", err)
	}
}
