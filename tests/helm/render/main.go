// Command render is `helm template` for the Helm-chart test: it renders a chart
// directory with Helm's own install action (client-only dry run, CRDs included,
// exactly what `helm template --include-crds` does) and prints every rendered
// object as one JSON document per line, CRDs first, so the Go test needs no
// YAML parser. It owns only the rendering; what is applied is the test's call.
//
//	go run ./render -chart DIR -namespace dapr-system [-set k=v ...]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
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
	inst := action.NewInstall(&action.Configuration{})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.Replace = true
	inst.IncludeCRDs = true
	inst.ReleaseName = *release
	inst.Namespace = *namespace
	rel, err := inst.Run(chrt, vals)
	if err != nil {
		return err
	}
	docs := releaseutil.SplitManifests(rel.Manifest)
	names := make([]string, 0, len(docs))
	for k := range docs {
		names = append(names, k)
	}
	// SplitManifests names them manifest-0, manifest-1, ... in order.
	sort.Slice(names, func(i, j int) bool { return order(names[i]) < order(names[j]) })
	out := json.NewEncoder(os.Stdout)
	for _, n := range names {
		j, err := yaml.YAMLToJSON([]byte(docs[n]))
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
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

func order(name string) int {
	var n int
	fmt.Sscanf(strings.TrimPrefix(name, "manifest-"), "%d", &n)
	return n
}
