// Command image-tool assembles the sentry-rs container image as an OCI image layout with
// go-containerregistry, without a Docker engine: one layer holding the static binary at /sentry
// (and the CA bundle, as distroless/static carries it), entrypoint /sentry, numeric user
// 65532:65532, OCI labels. Timestamps come from SOURCE_DATE_EPOCH (default 0), so the same
// inputs give the same digest. scripts/image drives it; the Dockerfile builds the same image.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type labels map[string]string

func (l labels) String() string { return fmt.Sprint(map[string]string(l)) }
func (l labels) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("label %q is not key=value", kv)
	}
	l[k] = v
	return nil
}

func main() {
	binary := flag.String("binary", "", "static sentry binary, installed as /sentry")
	caCerts := flag.String("ca-certs", "", "CA bundle installed as /etc/ssl/certs/ca-certificates.crt (optional)")
	out := flag.String("out", "", "OCI image layout directory to create")
	arch := flag.String("arch", "amd64", "image architecture (amd64, arm64)")
	ref := flag.String("ref", "latest", "org.opencontainers.image.ref.name of the image in the layout")
	lbl := labels{}
	flag.Var(lbl, "label", "OCI label key=value (repeatable)")
	flag.Parse()
	if err := run(*binary, *caCerts, *out, *arch, *ref, lbl); err != nil {
		fmt.Fprintln(os.Stderr, "image-tool:", err)
		os.Exit(1)
	}
}

func run(binary, caCerts, out, arch, ref string, lbl labels) error {
	if binary == "" || out == "" {
		return fmt.Errorf("-binary and -out are required")
	}
	epoch := time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		epoch = time.Unix(n, 0).UTC()
	}
	files := []file{{path: "sentry", src: binary, mode: 0o755}}
	if caCerts != "" {
		files = append(files, file{path: "etc/ssl/certs/ca-certificates.crt", src: caCerts, mode: 0o644})
	}
	layerTar, err := layerBytes(files, epoch)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "scripts/image", Comment: "static sentry binary"},
	})
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = arch
	cfg.OS = "linux"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{"/sentry"}
	cfg.Config.User = "65532:65532"
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if caCerts != "" {
		cfg.Config.Env = append(cfg.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
	}
	cfg.Config.Labels = lbl
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return err
	}
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return err
	}
	platform := v1.Platform{OS: "linux", Architecture: arch}
	return p.AppendImage(img,
		layout.WithPlatform(platform),
		layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}))
}

type file struct {
	path string
	src  string
	mode int64
}

// layerBytes is an uncompressed tar of files and their parent directories, owned by root, all
// stamped with epoch.
func layerBytes(files []file, epoch time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		parts := strings.Split(f.path, "/")
		for i := 1; i < len(parts); i++ {
			dir := strings.Join(parts[:i], "/") + "/"
			if dirs[dir] {
				continue
			}
			dirs[dir] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		}
		data, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: f.mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
