// Command horizon-image builds an OCI image of the horizon command without a container
// engine: a static binary as the image's only file, /horizon, run as a non-root
// numeric user, with no shell and no base image. The image is reproducible: the same
// source, Go toolchain, tags and SOURCE_DATE_EPOCH give the same digest.
//
//	go run ./cmd/horizon-image -o bin/horizon-image.oci              # OCI layout directory
//	go run ./cmd/horizon-image -o bin/horizon-image.oci --tarball bin/horizon-image.tar
//
// It prints the image's digest on standard output. The layout and the tarball are
// what OCI tools copy to a registry; the tarball also loads into a container engine.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/spf13/pflag"
)

const (
	// horizonPackage is the command the image runs.
	horizonPackage = "github.com/horizon-mesh/horizon/cmd/horizon"
	// entrypoint is where the binary lies in the image.
	entrypoint = "/horizon"
	// imageUser is the numeric user and group the image runs as: not root, and the
	// same as the chart's and examples' pod security context.
	imageUser = "65532:65532"
	// maxBinarySize bounds the binary read into memory (horizon is ~100 MiB at most).
	maxBinarySize = 1 << 30
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "horizon-image:", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	out     string
	tarball string
	tag     string
	binary  string
	arch    string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := pflag.NewFlagSet("horizon-image", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVarP(&o.out, "output", "o", "bin/horizon-image.oci", "OCI image layout directory to write (replaced if it is one already)")
	fs.StringVar(&o.tarball, "tarball", "", "also write the image as a tarball here, loadable by container engines (empty: none)")
	fs.StringVar(&o.tag, "tag", "horizon:latest", "image name and tag recorded in the layout's index and the tarball")
	fs.StringVar(&o.binary, "binary", "", "horizon binary to put in the image, which must be static (empty: build it with CGO_ENABLED=0, -trimpath, -buildvcs=false and no build ID)")
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "GOARCH of the image")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	tag, err := name.NewTag(o.tag)
	if err != nil {
		return fmt.Errorf("--tag: %w", err)
	}
	if err := checkOutput(o.out); err != nil {
		return err
	}
	created, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}

	bin := o.binary
	if bin == "" {
		dir, err := os.MkdirTemp("", "horizon-image-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "horizon")
		if err := buildBinary(ctx, bin, o.arch, stderr); err != nil {
			return err
		}
	}
	data, err := readBinary(bin)
	if err != nil {
		return err
	}
	img, err := newImage(data, o.arch, created)
	if err != nil {
		return err
	}
	if err := writeLayout(o.out, img, tag); err != nil {
		return err
	}
	if o.tarball != "" {
		if err := tarball.WriteToFile(o.tarball, tag, img); err != nil {
			return fmt.Errorf("write tarball %s: %w", o.tarball, err)
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "horizon-image: %s (%s/%s) written to %s\n", tag, "linux", o.arch, o.out)
	fmt.Fprintln(stdout, digest)
	return nil
}

// sourceDateEpoch is the image's creation time: $SOURCE_DATE_EPOCH (seconds since the
// Unix epoch) when set, else the epoch itself, so that the time of the build never
// enters the image.
func sourceDateEpoch(v string) (time.Time, error) {
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || secs < 0 || secs > 253402300799 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970-01-01 UTC, from 0 to 253402300799", v)
	}
	return time.Unix(secs, 0).UTC(), nil
}

// buildBinary builds the horizon command into out as a static, reproducible Linux
// binary. Build tags come from GOFLAGS, as for every other build of the project.
func buildBinary(ctx context.Context, out, arch string, stderr io.Writer) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out,
		"-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", horizonPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w", horizonPackage, err)
	}
	return nil
}

func readBinary(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--binary: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBinarySize+1))
	if err != nil {
		return nil, fmt.Errorf("--binary: read %s: %w", path, err)
	}
	if len(data) > maxBinarySize {
		return nil, fmt.Errorf("--binary: %s is larger than %d bytes", path, maxBinarySize)
	}
	if !bytes.HasPrefix(data, []byte("\x7fELF")) {
		return nil, fmt.Errorf("--binary: %s is not an ELF executable", path)
	}
	return data, nil
}

// layerTar is the image's one layer, uncompressed: the binary at /horizon, owned by
// root and executable by everyone, with the modification time at the epoch.
func layerTar(binary []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     entrypoint[1:],
		Size:     int64(len(binary)),
		Mode:     0o755,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// newImage assembles the OCI image: one layer, the binary as entrypoint, a non-root
// numeric user, and created at created.
func newImage(binary []byte, arch string, created time.Time) (v1.Image, error) {
	layerData, err := layerTar(binary)
	if err != nil {
		return nil, fmt.Errorf("write layer: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerData)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("compress layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "horizon-image", Comment: "the horizon binary"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		User:       imageUser,
		Entrypoint: []string{entrypoint},
		WorkingDir: "/",
		Labels:     map[string]string{"org.opencontainers.image.title": "horizon"},
	}
	return mutate.ConfigFile(img, cf)
}

// checkOutput refuses an --output that is there already and is no OCI layout.
func checkOutput(dir string) error {
	if dir == "" {
		return errors.New("--output: must name a directory")
	}
	if _, err := os.Stat(dir); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
			return fmt.Errorf("--output %s exists and is not an OCI layout: refusing to replace it", dir)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--output: %w", err)
	}
	return nil
}

// writeLayout writes img as the only image of an OCI layout at dir. A directory that
// is there already is replaced only if it is an OCI layout (has an oci-layout file):
// a mistyped --output never deletes anything else.
func writeLayout(dir string, img v1.Image, tag name.Tag) error {
	if err := checkOutput(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+"-")
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("write OCI layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return fmt.Errorf("write OCI layout: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	return os.Rename(tmp, dir)
}
