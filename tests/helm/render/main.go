// Command render is `helm template --include-crds` for the Helm-chart test:
// it renders a chart directory with Helm's own engine the way Helm's install
// action does in a client-only dry run (dependencies processed, release
// values, default capabilities, manifests sorted in install order, CRDs
// first, NOTES dropped) and prints every rendered object as one JSON
// document per line, so the Go test needs no YAML parser. It owns only the rendering; what is applied is the test's call.
//
//	go run ./render -chart DIR -namespace dapr-system [-set k=v ...]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

type sets []string

func (s *sets) String() string     { return strings.Join(*s, ",") }
func (s *sets) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func run() error {
	chartDir := flag.String("chart", "", "chart directory")
	namespace := flag.String("namespace", "dapr-system", "release namespace")
	release := flag.String("release", "dapr", "release name")
	var values sets
	flag.Var(&values, "set", "a value, as helm --set (repeatable)")
	flag.Parse()
	if *chartDir == "" {
		return fmt.Errorf("-chart is required")
	}
	chrt, err := loader.Load(*chartDir)
	if err != nil {
		return err
	}
	vals := map[string]any{}
	for _, v := range values {
		if err := strvals.ParseInto(v, vals); err != nil {
			return fmt.Errorf("-set %s: %w", v, err)
		}
	}
	// What `helm template --include-crds` (action.Install, client-only) does,
	// with the engine and release utilities directly: far fewer packages to
	// build than the install action.
	if err := chartutil.ProcessDependenciesWithMerge(chrt, vals); err != nil {
		return err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	opts := chartutil.ReleaseOptions{Name: *release, Namespace: *namespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(chrt, vals, opts, caps)
	if err != nil {
		return err
	}
	files, err := engine.Render(chrt, rv)
	if err != nil {
		return err
	}
	for name := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(files, name)
		}
	}
	_, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return err
	}
	var docs []string
	for _, crd := range chrt.CRDObjects() {
		for _, d := range releaseutil.SplitManifests(string(crd.File.Data)) {
			docs = append(docs, d)
		}
	}
	for _, m := range manifests {
		docs = append(docs, m.Content)
	}
	out := json.NewEncoder(os.Stdout)
	for i, d := range docs {
		j, err := yaml.YAMLToJSON([]byte(d))
		if err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		var obj map[string]any
		if err := json.Unmarshal(j, &obj); err != nil {
			return err
		}
		if obj == nil {
			continue
		}
		if err := out.Encode(obj); err != nil {
			return err
		}
	}
	return nil
}
