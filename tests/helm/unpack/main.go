// Command unpack takes the sentry binary out of an OCI image (an image-layout
// directory, or a tar archive of one, as scripts/image writes under
// target/image/) so that the Helm-chart test runs the image's own /sentry:
// index → manifest (the platform of this machine when the index lists
// several) → layers in order, the last /sentry wins. It also prints the
// image config's Entrypoint and User. Only the standard library: it owns
// reading the layout, nothing about what is checked.
//
//	go run ./unpack -image target/image -out DIR/sentry
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "unpack:", err)
		os.Exit(1)
	}
}

// layout reads files of an image layout by path ("index.json",
// "blobs/sha256/…").
type layout func(name string) ([]byte, error)

func dirLayout(dir string) layout {
	return func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, name)) }
}

func tarLayout(file string) (layout, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		files[strings.TrimPrefix(path.Clean(h.Name), "./")] = b
	}
	return func(name string) ([]byte, error) {
		b, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("%s: no %s", file, name)
		}
		return b, nil
	}, nil
}

// open finds the layout: image itself (a directory with index.json or a
// tar), or the one directory/tar inside it that is one.
func open(image string) (layout, string, error) {
	st, err := os.Stat(image)
	if err != nil {
		return nil, "", err
	}
	if !st.IsDir() {
		l, err := tarLayout(image)
		return l, image, err
	}
	if _, err := os.Stat(filepath.Join(image, "index.json")); err == nil {
		return dirLayout(image), image, nil
	}
	ents, err := os.ReadDir(image)
	if err != nil {
		return nil, "", err
	}
	for _, e := range ents {
		p := filepath.Join(image, e.Name())
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(p, "index.json")); err == nil {
				return dirLayout(p), p, nil
			}
		} else if strings.HasSuffix(e.Name(), ".tar") {
			l, err := tarLayout(p)
			return l, p, err
		}
	}
	return nil, "", fmt.Errorf("%s holds no OCI image layout (index.json) or .tar of one", image)
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Manifests []descriptor `json:"manifests"` // an index
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
}

func blob(l layout, d descriptor) ([]byte, error) {
	algo, hex, ok := strings.Cut(d.Digest, ":")
	if !ok {
		return nil, fmt.Errorf("bad digest %q", d.Digest)
	}
	return l(path.Join("blobs", algo, hex))
}

// resolve follows indexes down to an image manifest.
func resolve(l layout, raw []byte) (manifest, error) {
	for depth := 0; depth < 4; depth++ {
		var m manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			return m, err
		}
		if len(m.Manifests) == 0 {
			return m, nil
		}
		pick := m.Manifests[0]
		for _, d := range m.Manifests {
			if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH {
				pick = d
			}
		}
		b, err := blob(l, pick)
		if err != nil {
			return m, err
		}
		raw = b
	}
	return manifest{}, errors.New("index nesting too deep")
}

func layerReader(d descriptor, b []byte) (io.Reader, error) {
	switch {
	case strings.HasSuffix(d.MediaType, "+gzip") || strings.HasSuffix(d.MediaType, ".gzip"):
		return gzip.NewReader(bytes.NewReader(b))
	case strings.HasSuffix(d.MediaType, ".tar") || strings.HasSuffix(d.MediaType, "tar"):
		return bytes.NewReader(b), nil
	}
	return nil, fmt.Errorf("layer media type %q not supported", d.MediaType)
}

func run() error {
	image := flag.String("image", "", "OCI image layout directory or tar")
	out := flag.String("out", "", "where to write the image's /sentry")
	flag.Parse()
	if *image == "" || *out == "" {
		return errors.New("-image and -out are required")
	}
	l, where, err := open(*image)
	if err != nil {
		return err
	}
	idx, err := l("index.json")
	if err != nil {
		return err
	}
	m, err := resolve(l, idx)
	if err != nil {
		return err
	}
	var sentry []byte
	for _, d := range m.Layers {
		b, err := blob(l, d)
		if err != nil {
			return err
		}
		r, err := layerReader(d, b)
		if err != nil {
			return err
		}
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if strings.TrimPrefix(path.Clean("/"+h.Name), "/") == "sentry" && h.Typeflag == tar.TypeReg {
				if sentry, err = io.ReadAll(tr); err != nil {
					return err
				}
			}
		}
	}
	if sentry == nil {
		return fmt.Errorf("%s: no /sentry in any layer", where)
	}
	if err := os.WriteFile(*out, sentry, 0o755); err != nil {
		return err
	}
	var cfg struct {
		Config struct {
			Entrypoint []string `json:"Entrypoint"`
			User       string   `json:"User"`
		} `json:"config"`
	}
	if b, err := blob(l, m.Config); err == nil {
		_ = json.Unmarshal(b, &cfg)
	}
	fmt.Printf("unpack: /sentry of %s (%d bytes) → %s; config Entrypoint %q User %q\n",
		where, len(sentry), *out, cfg.Config.Entrypoint, cfg.Config.User)
	return nil
}
