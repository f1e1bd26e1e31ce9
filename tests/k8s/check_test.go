package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// The real overlays, rendered once. The negative tests break one thing in
// a copy of a rendered overlay and expect the checker to name it.
var (
	renderOnce        sync.Once
	devYAML, prodYAML string
	renderErr         error
)

func rendered(t *testing.T) (string, string) {
	t.Helper()
	renderOnce.Do(func() {
		var dev, prod []byte
		if dev, renderErr = render("../../k8s/overlays/dev"); renderErr != nil {
			return
		}
		if prod, renderErr = render("../../k8s/overlays/prod"); renderErr != nil {
			return
		}
		devYAML, prodYAML = string(dev), string(prod)
	})
	if renderErr != nil {
		t.Fatal(renderErr)
	}
	return devYAML, prodYAML
}

// ferryBin is the binary for `ferry check-config` (make test-k8s sets
// FERRY_BIN); without it the tests that need it are skipped.
func ferryBin(t *testing.T, needed bool) string {
	bin := os.Getenv("FERRY_BIN")
	if bin == "" && needed {
		t.Skip("FERRY_BIN is not set: no ferry binary to run check-config with")
	}
	return bin
}

// Every overlay in k8s/overlays passes, and has expectations in
// contract.go.
func TestRealOverlaysPass(t *testing.T) {
	dirs, err := filepath.Glob("../../k8s/overlays/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays under ../../k8s/overlays (%v)", err)
	}
	bin := ferryBin(t, false)
	if bin == "" {
		t.Log("FERRY_BIN is not set: ferry check-config is not run")
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		exp, ok := overlays[name]
		if !ok {
			t.Errorf("overlay %s has no expectations in contract.go", name)
			continue
		}
		summary, errs := checkOverlay(dir, exp, bin)
		if len(errs) > 0 {
			t.Errorf("%s:\n  %s", name, strings.Join(errs, "\n  "))
		}
		t.Logf("%s: %s", name, summary)
	}
}

// Kustomize overlays in testdata that break the dev overlay. They go
// through the whole path: kustomize, then the strict decoding.
func TestBrokenOverlays(t *testing.T) {
	cases := map[string]string{
		"typo-field":   `unknown field "spec.template.spec.initContainers[0].imagePullPolicyy"`,
		"wrong-type":   `cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32`,
		"unknown-kind": `unknown kind "Deploymnet"`,
	}
	for dir, want := range cases {
		t.Run(dir, func(t *testing.T) {
			_, errs := checkOverlay("testdata/"+dir, overlays["dev"], "")
			assertFinds(t, errs, want)
		})
	}
}

type mutation struct {
	name     string
	prod     bool   // mutate the prod overlay instead of dev
	old, new string // replace old by new...
	n        int    // ...this many times (-1: all)
	want     string // a problem containing this must be reported
	ferry    bool   // needs the ferry binary
}

var mutations = []mutation{
	// Strict decoding against the API types.
	{name: "mistyped field", old: "imagePullPolicy: IfNotPresent", new: "imagePullPolicyy: IfNotPresent", n: 1,
		want: `unknown field "spec.template.spec.containers[0].imagePullPolicyy"`},
	{name: "wrongly cased field", old: "imagePullPolicy: IfNotPresent", new: "ImagePullPolicy: IfNotPresent", n: 1,
		want: `unknown field "spec.template.spec.containers[0].ImagePullPolicy"`},
	{name: "string for an integer", old: "  replicas: 1\n", new: "  replicas: \"three\"\n", n: 1,
		want: "cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"},
	{name: "integer for a string", old: "imagePullPolicy: IfNotPresent", new: "imagePullPolicy: 3", n: 1,
		want: "cannot unmarshal number into Go struct field Container.spec.template.spec.containers.imagePullPolicy of type v1.PullPolicy"},
	{name: "bad quantity", old: "memory: 128Mi", new: "memory: 128MB", n: 1,
		want: "quantities must match the regular expression"},
	{name: "duplicate key", old: "  replicas: 1\n", new: "  replicas: 1\n  replicas: 2\n", n: 1,
		want: `key "replicas" already set in map`},
	{name: "unknown kind", old: "kind: NetworkPolicy", new: "kind: NetworkPolicyy", n: 1,
		want: `unknown kind "NetworkPolicyy"`},
	{name: "removed API version", old: "apiVersion: policy/v1\n", new: "apiVersion: policy/v1beta1\n", n: 1,
		want: `unknown kind "PodDisruptionBudget" (apiVersion "policy/v1beta1")`},

	// The sidecar, its probes and environment.
	{name: "sidecar without restartPolicy", old: "        restartPolicy: Always\n", new: "", n: -1,
		want: "must have restartPolicy Always"},
	{name: "readiness on /healthz", old: "path: /readyz", new: "path: /healthz", n: 1,
		want: "readinessProbe is GET /healthz on port ferry (8080); the contract is GET /readyz on port 8080"},
	{name: "readiness on the app port", old: "path: /readyz\n            port: ferry", new: "path: /readyz\n            port: 9000", n: 1,
		want: "readinessProbe is GET /readyz on port 9000 (9000)"},
	{name: "no startup probe", old: "        startupProbe:\n          failureThreshold: 30\n          httpGet:\n            path: /healthz\n            port: ferry\n          periodSeconds: 1\n", new: "", n: 1,
		want: "sidecar ferry: startupProbe is missing"},
	{name: "wrong listen address", old: "value: 0.0.0.0:8080", new: "value: 127.0.0.1:8080", n: 1,
		want: `env FERRY_LISTEN must be "0.0.0.0:8080"`},
	{name: "always pull", old: "imagePullPolicy: IfNotPresent", new: "imagePullPolicy: Always", n: 1,
		want: `imagePullPolicy is "Always", expected IfNotPresent`},

	// Hardening and resources.
	{name: "writable root filesystem", old: "readOnlyRootFilesystem: true", new: "readOnlyRootFilesystem: false", n: 1,
		want: "readOnlyRootFilesystem must be true"},
	{name: "privilege escalation", old: "allowPrivilegeEscalation: false", new: "allowPrivilegeEscalation: true", n: 1,
		want: "allowPrivilegeEscalation must be false"},
	{name: "capabilities kept", old: "- ALL\n", new: "- NET_RAW\n", n: 1,
		want: "capabilities.drop must contain ALL"},
	{name: "seccomp unconfined", old: "type: RuntimeDefault", new: "type: Unconfined", n: 1,
		want: "seccompProfile must be RuntimeDefault"},
	{name: "root allowed", old: "runAsNonRoot: true", new: "runAsNonRoot: false", n: 1,
		want: "runAsNonRoot must be true"},
	{name: "no memory limit", old: "          limits:\n            cpu: 500m\n            memory: 128Mi\n", new: "          limits:\n            cpu: 500m\n", n: 1,
		want: "resources.limits.memory is missing"},
	{name: "literal secret", old: "value: Bearer $(PEER_TOKEN)", new: "value: Bearer hunter2", n: 1,
		want: "env PEER_AUTHORIZATION holds a literal value"},
	{name: "missing secret key", old: "key: signing-secret", new: "key: signing-secrett", n: 1,
		want: `has no key "signing-secrett"`},

	// Grace period, drain and the spool volume.
	{name: "grace period too short", old: "terminationGracePeriodSeconds: 45", new: "terminationGracePeriodSeconds: 20", n: 1,
		want: "terminationGracePeriodSeconds is 20; Ferry's drain needs at least 30"},
	{name: "drain longer than the grace period", old: `"drain_timeout_ms": 15000`, new: `"drain_timeout_ms": 60000`, n: 1,
		want: "terminationGracePeriodSeconds is 45; Ferry's drain needs at least 75"},
	{name: "drain timeout left to the default", old: `"drain_timeout_ms": 15000,`, new: ``, n: 1,
		want: "set drain_timeout_ms explicitly"},
	{name: "spool volume without sizeLimit", old: "emptyDir:\n          sizeLimit: 512Mi", new: "emptyDir: {}", n: 1,
		want: `the spool's emptyDir "spool" needs a sizeLimit`},
	{name: "spool volume too small", old: "sizeLimit: 512Mi", new: "sizeLimit: 300Mi", n: 1,
		want: "spool.max_bytes (268435456) must be at most half the spool volume's sizeLimit"},
	{name: "config reads an unset variable", old: `"env": "PEER_AUTHORIZATION"`, new: `"env": "PEER_AUTH"`, n: 1,
		want: "peers.inventory.headers.Authorization reads environment variable PEER_AUTH, which the container does not set"},

	// Services, budgets, autoscalers, network policies.
	{name: "consumer Service to the app port", old: "    targetPort: ferry\n", new: "    targetPort: 9000\n", n: 1,
		want: `Service/inventory: port 8080 must reach container "ferry" port 8080, reaches "inventory" port 9000`},
	{name: "Service port name typo", old: "    targetPort: ferry\n", new: "    targetPort: ferri\n", n: 1,
		want: "targetPort ferri of port 8080 matches no container port of Deployment/inventory"},
	{name: "budget blocks evictions", old: "  maxUnavailable: 1\n", new: "  maxUnavailable: 0\n", n: 1,
		want: "maxUnavailable 0 blocks every eviction"},
	{name: "autoscaler targets nothing", old: "    kind: Deployment\n    name: checkout\n", new: "    kind: Deployment\n    name: checkou\n", n: 1,
		want: "Deployment/checkout: no HorizontalPodAutoscaler targets it"},
	{name: "checkout cannot reach consumers",
		old: "    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: checkout\n    - namespaceSelector:",
		new: "    - namespaceSelector:", n: 1,
		want: "the NetworkPolicies of Deployment/inventory do not let Deployment/checkout reach its port ferry"},
	{name: "consumer Ferry open to all",
		old: "  - from:\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: checkout\n    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: monitoring\n    ports:\n",
		new: "  - ports:\n", n: 1,
		want: "NetworkPolicy/consumers: lets every source reach Ferry's port 8080 of Deployment/inventory"},

	// prod's own promises.
	{name: "prod with two replicas", prod: true, old: "  replicas: 3\n", new: "  replicas: 2\n", n: 1,
		want: "spec.replicas is 2, expected 3"},
	{name: "prod on latest", prod: true, old: "image: ferry:0.1.0", new: "image: ferry:latest", n: 1,
		want: `this overlay pins image tags`},

	// The Ferry config through `ferry check-config`.
	{name: "config key typo", old: `"max_attempts": 12`, new: `"max_atempts": 12`, n: 1, ferry: true,
		want: "retry.max_atempts: unknown key"},
	{name: "route to an undefined peer", old: `"to": ["inventory", "shipping"]`, new: `"to": ["inventory", "shiping"]`, n: 1, ferry: true,
		want: `no peer named "shiping"`},
}

func TestMutations(t *testing.T) {
	dev, prod := rendered(t)
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			bin := ferryBin(t, m.ferry)
			src, exp := dev, overlays["dev"]
			if m.prod {
				src, exp = prod, overlays["prod"]
			}
			if !strings.Contains(src, m.old) {
				t.Fatalf("the rendered overlay no longer contains %q: update this case", m.old)
			}
			_, errs := checkRendered([]byte(strings.Replace(src, m.old, m.new, m.n)), exp, bin)
			assertFinds(t, errs, m.want)
		})
	}
}

// A signing secret in the Secret that Ferry would refuse fails the check:
// the config is checked with the values the container would really get.
func TestBadSigningSecretInSecret(t *testing.T) {
	dev, _ := rendered(t)
	bin := ferryBin(t, true)
	re := regexp.MustCompile(`(?m)^  signing-secret: \S+$`)
	if !re.MatchString(dev) {
		t.Fatal("the dev Secret has no signing-secret key: update this test")
	}
	bad := base64.StdEncoding.EncodeToString([]byte("not-a-webhook-secret"))
	_, errs := checkRendered([]byte(re.ReplaceAllString(dev, "  signing-secret: "+bad)), overlays["dev"], bin)
	assertFinds(t, errs, "peers.inventory.signing_secret")
}

func assertFinds(t *testing.T, errs []string, want string) {
	t.Helper()
	for _, e := range errs {
		if strings.Contains(e, want) {
			t.Logf("found: %s", strings.Join(errs, "\n  "))
			return
		}
	}
	if len(errs) == 0 {
		t.Fatalf("the checker found nothing; expected a problem containing %q", want)
	}
	t.Fatalf("expected a problem containing %q; got:\n  %s", want, strings.Join(errs, "\n  "))
}
