// Command k8s-check validates Ferry's Kubernetes manifests offline.
//
// For each kustomize overlay given, it renders the overlay with kustomize
// (the Go module kubectl embeds), decodes every object strictly into the
// Kubernetes API type of its apiVersion and kind (an unknown or wrongly
// cased field, a value of the wrong type, a duplicate key or an unknown
// kind fails), then checks what the manifests promise: the Ferry sidecar
// and its probes, ports and environment against the contract, the
// security context, resources, the grace period against Ferry's drain,
// the spool volume, Services, budgets, autoscalers and network policies,
// and, with -ferry, that each ConfigMap's Ferry config passes
// `ferry check-config` with the environment its container would get.
//
//	go run . -ferry ../../build/ferry ../../k8s/overlays/dev ../../k8s/overlays/prod
//
// What each overlay must satisfy is in contract.go, by the overlay's
// directory name. Exit status: 0 all good, 1 problems found, 2 usage.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	ferryBin := flag.String("ferry", "", "ferry binary for `check-config` (empty: skip that check)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: k8s-check [-ferry PATH] OVERLAY_DIR...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	failed := false
	for _, dir := range flag.Args() {
		name := filepath.Base(filepath.Clean(dir))
		exp, ok := overlays[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "%s: no expectations for an overlay named %q (known: %s); add them to contract.go\n",
				dir, name, strings.Join(overlayNames(), ", "))
			os.Exit(2)
		}
		summary, errs := checkOverlay(dir, exp, *ferryBin)
		if len(errs) > 0 {
			failed = true
			fmt.Fprintf(os.Stderr, "%s: %d problem(s)\n", dir, len(errs))
			for _, e := range errs {
				fmt.Fprintf(os.Stderr, "  %s\n", e)
			}
			continue
		}
		note := ""
		if *ferryBin == "" {
			note = " (ferry check-config skipped: no -ferry)"
		}
		fmt.Printf("%s: ok, %s%s\n", dir, summary, note)
	}
	if failed {
		os.Exit(1)
	}
}

// checkOverlay renders, decodes and checks one overlay.
func checkOverlay(dir string, exp expect, ferryBin string) (string, []string) {
	yml, err := render(dir)
	if err != nil {
		return "", []string{err.Error()}
	}
	return checkRendered(yml, exp, ferryBin)
}

// checkRendered decodes and checks a rendered overlay.
func checkRendered(yml []byte, exp expect, ferryBin string) (string, []string) {
	b, decodeErrs := decodeAll(yml)
	var errs []string
	for _, e := range decodeErrs {
		errs = append(errs, e.Error())
	}
	if len(errs) > 0 {
		// The invariants would only repeat what failed to decode.
		return b.summary(), errs
	}
	return b.summary(), checkBundle(b, exp, ferryBin)
}

func overlayNames() []string {
	var out []string
	for k := range overlays {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
