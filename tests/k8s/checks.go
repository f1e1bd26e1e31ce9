package main

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// report collects every problem of one overlay, each prefixed with the
// object it concerns.
type report struct{ errs []string }

func (r *report) add(where, format string, args ...any) {
	r.errs = append(r.errs, where+": "+fmt.Sprintf(format, args...))
}

// checker holds one decoded overlay and what it must satisfy.
type checker struct {
	b        *bundle
	exp      expect
	ferryBin string // "" skips `ferry check-config`
	r        report
}

// checkBundle runs every invariant on a decoded overlay.
func checkBundle(b *bundle, exp expect, ferryBin string) []string {
	c := &checker{b: b, exp: exp, ferryBin: ferryBin}
	c.checkMetadata()
	c.checkTopology()
	for _, d := range b.deployments {
		c.checkDeployment(d)
	}
	for _, s := range b.services {
		c.checkService(s)
	}
	c.checkDisruptionBudgets()
	c.checkAutoscalers()
	c.checkNetworkPolicies()
	return c.r.errs
}

// ---- metadata, namespace, names ------------------------------------------

func (c *checker) checkMetadata() {
	ns, ok := c.b.namespaces[c.exp.namespace]
	if !ok {
		c.r.add("Namespace/"+c.exp.namespace, "missing: the overlay must create its namespace")
	} else if ns.Labels[podSecurityLabel] != podSecurityLevel {
		c.r.add("Namespace/"+ns.Name, "label %s must be %q", podSecurityLabel, podSecurityLevel)
	}
	if len(c.b.namespaces) > 1 {
		c.r.add("Namespace", "the overlay creates %d namespaces; expected only %q", len(c.b.namespaces), c.exp.namespace)
	}
	each := func(kind string, m metav1.ObjectMeta) {
		where := kind + "/" + m.Name
		for _, msg := range validation.IsDNS1123Subdomain(m.Name) {
			c.r.add(where, "metadata.name: %s", msg)
		}
		if m.Namespace != c.exp.namespace {
			c.r.add(where, "namespace is %q, expected %q", m.Namespace, c.exp.namespace)
		}
		c.checkLabels(where+" metadata.labels", m.Labels)
	}
	for _, o := range c.b.configMaps {
		each("ConfigMap", o.ObjectMeta)
	}
	for _, o := range c.b.secrets {
		each("Secret", o.ObjectMeta)
	}
	for _, o := range c.b.services {
		each("Service", o.ObjectMeta)
		for _, msg := range validation.IsDNS1035Label(o.Name) {
			c.r.add("Service/"+o.Name, "metadata.name: %s", msg)
		}
	}
	for _, o := range c.b.deployments {
		each("Deployment", o.ObjectMeta)
	}
	for _, o := range c.b.pdbs {
		each("PodDisruptionBudget", o.ObjectMeta)
	}
	for _, o := range c.b.hpas {
		each("HorizontalPodAutoscaler", o.ObjectMeta)
	}
	for _, o := range c.b.netpols {
		each("NetworkPolicy", o.ObjectMeta)
	}
}

func (c *checker) checkLabels(where string, m map[string]string) {
	for k, v := range m {
		for _, msg := range validation.IsQualifiedName(k) {
			c.r.add(where, "key %q: %s", k, msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			c.r.add(where, "value of %q: %s", k, msg)
		}
	}
}

// The demo's Deployments and Services exist and the Services reach the
// right ports.
func (c *checker) checkTopology() {
	for name, want := range wantServices {
		d := c.deployment(name)
		if d == nil {
			c.r.add("Deployment/"+name, "missing")
		}
		s := c.service(name)
		if s == nil {
			c.r.add("Service/"+name, "missing")
			continue
		}
		var sp *corev1.ServicePort
		for i := range s.Spec.Ports {
			if s.Spec.Ports[i].Port == want.port {
				sp = &s.Spec.Ports[i]
			}
		}
		if sp == nil {
			c.r.add("Service/"+name, "has no port %d", want.port)
			continue
		}
		if d == nil {
			continue
		}
		if !c.selects(s.Spec.Selector, d) {
			c.r.add("Service/"+name, "does not select the pods of Deployment/%s", name)
			continue
		}
		ctr, port := resolvePodPort(&d.Spec.Template.Spec, sp.TargetPort)
		wantCtr := want.container
		if wantCtr == "" && len(d.Spec.Template.Spec.Containers) > 0 {
			wantCtr = d.Spec.Template.Spec.Containers[0].Name
		}
		if ctr != wantCtr || port != want.target {
			c.r.add("Service/"+name, "port %d must reach container %q port %d, reaches %q port %d",
				want.port, wantCtr, want.target, ctr, port)
		}
	}
}

// ---- Deployments -----------------------------------------------------------

func (c *checker) checkDeployment(d *appsv1.Deployment) {
	where := "Deployment/" + d.Name
	spec := &d.Spec.Template.Spec
	if d.Spec.Selector == nil {
		c.r.add(where, "spec.selector is missing")
	} else if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil {
		c.r.add(where, "spec.selector: %v", err)
	} else if sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		c.r.add(where, "spec.selector does not match the pod template's labels")
	}
	c.checkLabels(where+" spec.template.metadata.labels", d.Spec.Template.Labels)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != c.exp.replicas {
		got := "unset"
		if d.Spec.Replicas != nil {
			got = strconv.Itoa(int(*d.Spec.Replicas))
		}
		c.r.add(where, "spec.replicas is %s, expected %d", got, c.exp.replicas)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		c.r.add(where, "automountServiceAccountToken must be false (the pods never call the API)")
	}
	if len(spec.Containers) == 0 {
		c.r.add(where, "has no containers")
		return
	}
	var sidecar *corev1.Container
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == ferryContainer {
			sidecar = &spec.InitContainers[i]
		}
	}
	for i := range spec.Containers {
		if spec.Containers[i].Name == ferryContainer || imageRepo(spec.Containers[i].Image) == ferryImage {
			c.r.add(where, "Ferry runs as the regular container %q; it must be a native sidecar: an initContainer with restartPolicy Always",
				spec.Containers[i].Name)
		}
	}
	all := append(slices.Clone(spec.InitContainers), spec.Containers...)
	for i := range all {
		ctr := &all[i]
		cw := where + " container " + ctr.Name
		for _, msg := range validation.IsDNS1123Label(ctr.Name) {
			c.r.add(cw, "name: %s", msg)
		}
		c.checkImage(cw, ctr.Image, ctr.ImagePullPolicy, ctr.Name == ferryContainer)
		c.checkSecurity(cw, spec.SecurityContext, ctr.SecurityContext)
		c.checkResources(cw, ctr.Resources)
		c.checkEnvSecrets(cw, ctr)
		for _, p := range ctr.Ports {
			if p.Name != "" {
				for _, msg := range validation.IsValidPortName(p.Name) {
					c.r.add(cw, "port name %q: %s", p.Name, msg)
				}
			}
		}
	}
	for i := range spec.Containers {
		ctr := &spec.Containers[i]
		cw := where + " container " + ctr.Name
		if ctr.LivenessProbe == nil || ctr.ReadinessProbe == nil {
			c.r.add(cw, "needs a liveness and a readiness probe")
		}
	}
	if sidecar == nil {
		c.r.add(where, "has no Ferry sidecar (initContainer %q)", ferryContainer)
		return
	}
	c.checkSidecar(d, sidecar)
}

func imageRepo(image string) string {
	repo := image
	if i := strings.Index(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return repo
}

func imageTag(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		return image[i:]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		return image[i+1:]
	}
	return ""
}

func (c *checker) checkImage(where, image string, policy corev1.PullPolicy, sidecar bool) {
	want := demoImage
	if sidecar {
		want = ferryImage
	}
	repo := imageRepo(image)
	if repo != want && !strings.HasSuffix(repo, "/"+want) {
		c.r.add(where, "image %q, expected %s", image, want)
	}
	if policy != pullPolicy {
		c.r.add(where, "imagePullPolicy is %q, expected %s", policy, pullPolicy)
	}
	tag := imageTag(image)
	if c.exp.pinnedTags && (tag == "" || tag == "latest") {
		c.r.add(where, "image %q: this overlay pins image tags (kustomize images:), not latest", image)
	}
}

// checkSecurity checks the effective settings: the container's, else the
// pod's.
func (c *checker) checkSecurity(where string, pod *corev1.PodSecurityContext, ctr *corev1.SecurityContext) {
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if ctr == nil {
		ctr = &corev1.SecurityContext{}
	}
	nonRoot := pod.RunAsNonRoot
	if ctr.RunAsNonRoot != nil {
		nonRoot = ctr.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		c.r.add(where, "runAsNonRoot must be true")
	}
	user := pod.RunAsUser
	if ctr.RunAsUser != nil {
		user = ctr.RunAsUser
	}
	if user != nil && *user == 0 {
		c.r.add(where, "runAsUser must not be 0")
	}
	if ctr.ReadOnlyRootFilesystem == nil || !*ctr.ReadOnlyRootFilesystem {
		c.r.add(where, "readOnlyRootFilesystem must be true")
	}
	if ctr.AllowPrivilegeEscalation == nil || *ctr.AllowPrivilegeEscalation {
		c.r.add(where, "allowPrivilegeEscalation must be false")
	}
	if ctr.Privileged != nil && *ctr.Privileged {
		c.r.add(where, "must not be privileged")
	}
	if ctr.Capabilities == nil || !slices.Contains(ctr.Capabilities.Drop, "ALL") {
		c.r.add(where, "capabilities.drop must contain ALL")
	} else if len(ctr.Capabilities.Add) > 0 {
		c.r.add(where, "adds capabilities %v", ctr.Capabilities.Add)
	}
	seccomp := pod.SeccompProfile
	if ctr.SeccompProfile != nil {
		seccomp = ctr.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.r.add(where, "seccompProfile must be RuntimeDefault")
	}
}

func (c *checker) checkResources(where string, res corev1.ResourceRequirements) {
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := res.Requests[name]
		lim, hasLim := res.Limits[name]
		if !hasReq {
			c.r.add(where, "resources.requests.%s is missing", name)
		}
		if !hasLim {
			c.r.add(where, "resources.limits.%s is missing", name)
		}
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			c.r.add(where, "resources.requests.%s (%s) exceeds the limit (%s)", name, req.String(), lim.String())
		}
	}
}

// Secrets come from Secrets: an env var named like a credential must not
// hold a literal, and every secretKeyRef must name an existing key.
var secretName = regexp.MustCompile(`(?i)token|secret|password|authorization|key`)

func (c *checker) checkEnvSecrets(where string, ctr *corev1.Container) {
	fromSecret := map[string]bool{}
	for _, e := range ctr.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			fromSecret[e.Name] = true
			c.checkSecretRef(where+" env "+e.Name, e.ValueFrom.SecretKeyRef)
			continue
		}
		if e.ValueFrom == nil && secretName.MatchString(e.Name) {
			refsSecret := false
			for _, ref := range envRefs(e.Value) {
				refsSecret = refsSecret || fromSecret[ref]
			}
			if !refsSecret {
				c.r.add(where, "env %s holds a literal value; take it from a Secret (secretKeyRef)", e.Name)
			}
		}
	}
	if len(ctr.EnvFrom) > 0 {
		c.r.add(where, "envFrom is not supported by this checker; use env with secretKeyRef/configMapKeyRef")
	}
}

func (c *checker) checkSecretRef(where string, ref *corev1.SecretKeySelector) {
	if slices.Contains(c.exp.externalSecrets, ref.Name) {
		return
	}
	s, ok := c.b.secrets[ref.Name]
	if !ok {
		c.r.add(where, "Secret %q is not in the overlay (nor declared external for it)", ref.Name)
		return
	}
	if _, ok := s.Data[ref.Key]; !ok {
		if _, ok := s.StringData[ref.Key]; !ok {
			c.r.add(where, "Secret %q has no key %q", ref.Name, ref.Key)
		}
	}
}

var envRefRe = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// envRefs lists the $(NAME) references in an env value.
func envRefs(v string) []string {
	var out []string
	for _, m := range envRefRe.FindAllStringSubmatch(strings.ReplaceAll(v, "$$", ""), -1) {
		out = append(out, m[1])
	}
	return out
}

func envValue(ctr *corev1.Container, name string) (string, bool) {
	for _, e := range ctr.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	return "", false
}

func resolveProbePort(ctr *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range ctr.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// resolvePodPort finds which container of a pod a Service or NetworkPolicy
// port means: a port name, or a number that some container declares.
func resolvePodPort(spec *corev1.PodSpec, p intstr.IntOrString) (string, int32) {
	for _, ctr := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		for _, cp := range ctr.Ports {
			if (p.Type == intstr.String && cp.Name == p.StrVal) ||
				(p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return ctr.Name, cp.ContainerPort
			}
		}
	}
	return "", 0
}

func (c *checker) checkProbe(where, which string, ctr *corev1.Container, p *corev1.Probe, wantPath string) {
	if p == nil {
		c.r.add(where, "%s is missing", which)
		return
	}
	if p.HTTPGet == nil {
		c.r.add(where, "%s must be an httpGet of %s on port %d", which, wantPath, ferryPort)
		return
	}
	port := resolveProbePort(ctr, p.HTTPGet.Port)
	if p.HTTPGet.Path != wantPath || port != ferryPort {
		c.r.add(where, "%s is GET %s on port %s (%d); the contract is GET %s on port %d",
			which, p.HTTPGet.Path, p.HTTPGet.Port.String(), port, wantPath, ferryPort)
	}
	if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
		c.r.add(where, "%s uses scheme %s; Ferry's listener here is plain HTTP", which, p.HTTPGet.Scheme)
	}
}

func (c *checker) checkSidecar(d *appsv1.Deployment, s *corev1.Container) {
	where := "Deployment/" + d.Name + " sidecar " + s.Name
	spec := &d.Spec.Template.Spec
	if s.RestartPolicy == nil || *s.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		c.r.add(where, "must have restartPolicy Always (a native sidecar: starts before the app, stops after it)")
	}
	if len(s.Command) > 0 {
		c.r.add(where, "overrides the image's command (ENTRYPOINT [\"ferry\"]); use args")
	}
	if len(s.Args) > 0 && !(len(s.Args) == 1 && s.Args[0] == "serve") {
		c.r.add(where, "args %q: expected none or [serve] (configure through FERRY_* and the ConfigMap)", s.Args)
	}
	hasPort := false
	for _, p := range s.Ports {
		hasPort = hasPort || p.ContainerPort == ferryPort
	}
	if !hasPort {
		c.r.add(where, "must declare containerPort %d", ferryPort)
	}
	c.checkProbe(where, "startupProbe", s, s.StartupProbe, healthPath)
	c.checkProbe(where, "livenessProbe", s, s.LivenessProbe, healthPath)
	c.checkProbe(where, "readinessProbe", s, s.ReadinessProbe, readyPath)
	for name, want := range map[string]string{
		"FERRY_CONFIG": ferryConfigPath, "FERRY_LISTEN": ferryListen, "FERRY_SPOOL_DIR": ferrySpoolDir,
	} {
		if v, ok := envValue(s, name); !ok || v != want {
			c.r.add(where, "env %s must be %q", name, want)
		}
	}

	// The spool: a mounted volume with bounded size.
	spoolVol := c.mountedVolume(spec, s, ferrySpoolDir)
	var sizeLimit *resource.Quantity
	switch {
	case spoolVol == nil:
		c.r.add(where, "nothing is mounted at %s (the spool)", ferrySpoolDir)
	case spoolVol.EmptyDir != nil:
		if spoolVol.EmptyDir.SizeLimit == nil || spoolVol.EmptyDir.SizeLimit.IsZero() {
			c.r.add(where, "the spool's emptyDir %q needs a sizeLimit", spoolVol.Name)
		} else {
			sizeLimit = spoolVol.EmptyDir.SizeLimit
		}
		if spoolVol.EmptyDir.Medium == corev1.StorageMediumMemory {
			c.r.add(where, "the spool must not be in memory (medium Memory): it counts against the memory limit")
		}
	case spoolVol.PersistentVolumeClaim != nil, spoolVol.Ephemeral != nil:
	default:
		c.r.add(where, "the spool volume %q must be an emptyDir with sizeLimit or a PersistentVolumeClaim", spoolVol.Name)
	}
	for _, m := range s.VolumeMounts {
		if m.MountPath == ferrySpoolDir && m.ReadOnly {
			c.r.add(where, "the spool is mounted read-only")
		}
	}

	// The config: a ConfigMap key mounted at FERRY_CONFIG.
	cfgText, ok := c.mountedConfig(where, spec, s)
	if !ok {
		return
	}
	cfg, err := parseFerryConfig(cfgText)
	if err != nil {
		c.r.add(where, "ConfigMap's %s: %v", path.Base(ferryConfigPath), err)
		return
	}
	c.checkFerryConfig(d, s, cfg, cfgText, sizeLimit)
}

// mountedVolume returns the volume mounted at mountPath in ctr.
func (c *checker) mountedVolume(spec *corev1.PodSpec, ctr *corev1.Container, mountPath string) *corev1.Volume {
	for _, m := range ctr.VolumeMounts {
		if m.MountPath != mountPath {
			continue
		}
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == m.Name {
				return &spec.Volumes[i]
			}
		}
	}
	return nil
}

// mountedConfig finds the ConfigMap key that appears at FERRY_CONFIG in
// the sidecar, through a directory mount (with or without items) or a
// subPath mount, and returns its text.
func (c *checker) mountedConfig(where string, spec *corev1.PodSpec, s *corev1.Container) (string, bool) {
	dir, file := path.Split(ferryConfigPath)
	dir = strings.TrimSuffix(dir, "/")
	for _, m := range s.VolumeMounts {
		var inVolume string // the file's path inside the volume
		switch {
		case m.MountPath == ferryConfigPath && m.SubPath != "":
			inVolume = m.SubPath
		case m.MountPath == dir && m.SubPath == "":
			inVolume = file
		default:
			continue
		}
		var vol *corev1.Volume
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == m.Name {
				vol = &spec.Volumes[i]
			}
		}
		if vol == nil {
			c.r.add(where, "volumeMount %q names no volume", m.Name)
			return "", false
		}
		if vol.ConfigMap == nil {
			c.r.add(where, "%s must come from a ConfigMap (volume %q)", ferryConfigPath, vol.Name)
			return "", false
		}
		key := inVolume
		if len(vol.ConfigMap.Items) > 0 {
			key = ""
			for _, it := range vol.ConfigMap.Items {
				if it.Path == inVolume {
					key = it.Key
				}
			}
		}
		cm, ok := c.b.configMaps[vol.ConfigMap.Name]
		if !ok {
			c.r.add(where, "ConfigMap %q (volume %q) is not in the overlay", vol.ConfigMap.Name, vol.Name)
			return "", false
		}
		text, ok := cm.Data[key]
		if key == "" || !ok {
			c.r.add(where, "ConfigMap %q has no key that appears as %s", cm.Name, ferryConfigPath)
			return "", false
		}
		return text, true
	}
	c.r.add(where, "no ConfigMap is mounted at %s", ferryConfigPath)
	return "", false
}

// ---- the Ferry config against the pod around it ---------------------------

func (c *checker) checkFerryConfig(d *appsv1.Deployment, s *corev1.Container, cfg *ferryConfig, text string, sizeLimit *resource.Quantity) {
	where := "Deployment/" + d.Name + " sidecar " + s.Name + " config"
	spec := &d.Spec.Template.Spec

	// Values the grace period and the volume depend on are spelled out.
	if cfg.drainTimeoutMs < 0 {
		c.r.add(where, "set drain_timeout_ms explicitly: terminationGracePeriodSeconds is derived from it")
	}
	if cfg.spoolMaxBytes < 0 {
		c.r.add(where, "set spool.max_bytes explicitly: the spool volume's sizeLimit is derived from it")
	}
	var maxTimeout int64
	for _, p := range cfg.peers {
		if p.kind != "http" {
			continue
		}
		if p.timeoutMs < 0 {
			c.r.add(where, "peers.%s: set timeout_ms explicitly: the grace period is derived from it", p.name)
		}
		maxTimeout = max(maxTimeout, p.timeoutMs)
		c.checkPeer(where, d, p)
	}

	// Grace period: preStop pauses, then Ferry's drain.
	var preStop int64
	for _, ctr := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil && ctr.Lifecycle.PreStop.Sleep != nil {
			preStop = max(preStop, ctr.Lifecycle.PreStop.Sleep.Seconds)
		}
	}
	if cfg.drainTimeoutMs >= 0 {
		need := preStop*1000 + cfg.drainTimeoutMs + maxTimeout + drainSlackMs
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if spec.TerminationGracePeriodSeconds != nil {
			grace = *spec.TerminationGracePeriodSeconds
		}
		if grace*1000 < need {
			c.r.add("Deployment/"+d.Name, "terminationGracePeriodSeconds is %d; Ferry's drain needs at least %d "+
				"(preStop %d s + drain_timeout_ms %d + longest peer timeout_ms %d + %d ms for open requests)",
				grace, (need+999)/1000, preStop, cfg.drainTimeoutMs, maxTimeout, drainSlackMs)
		}
	}

	// The spool's backpressure starts well before the kubelet's eviction.
	if sizeLimit != nil && cfg.spoolMaxBytes >= 0 {
		if limit := sizeLimit.Value(); cfg.spoolMaxBytes*2 > limit {
			c.r.add(where, "spool.max_bytes (%d) must be at most half the spool volume's sizeLimit (%s = %d): "+
				"the write-ahead log and free-space reserve need the rest, and exceeding sizeLimit evicts the pod",
				cfg.spoolMaxBytes, sizeLimit.String(), limit)
		}
	}

	// Every {"env": NAME} the config reads is set by the container.
	defined := map[string]bool{}
	for _, e := range s.Env {
		defined[e.Name] = true
	}
	for _, ref := range cfg.envRefs {
		if !defined[ref.name] {
			c.r.add(where, "%s reads environment variable %s, which the container does not set", ref.path, ref.name)
		}
	}
	if len(cfg.fileRefs) > 0 {
		c.r.add(where, "{\"file\": ...} secret references (%s) cannot be checked offline; use {\"env\": ...}",
			cfg.fileRefs[0])
	}

	if c.ferryBin != "" {
		if err := c.runCheckConfig(d.Name, s, cfg, text); err != nil {
			c.r.add(where, "%v", err)
		}
	}
}

// checkPeer: an HTTP peer is the app in the same pod (loopback) or another
// consumer's Ferry, reached through its Service, allowed by the
// NetworkPolicies.
func (c *checker) checkPeer(where string, from *appsv1.Deployment, p ferryPeer) {
	pw := where + " peers." + p.name
	u, err := url.Parse(p.url)
	if err != nil || u.Host == "" {
		c.r.add(pw, "url %q is not a URL", p.url)
		return
	}
	port := int32(80)
	if u.Scheme == "https" {
		port = 443
	}
	if ps := u.Port(); ps != "" {
		n, _ := strconv.Atoi(ps)
		port = int32(n)
	}
	host := u.Hostname()
	if host == "localhost" || net.ParseIP(host) != nil && net.ParseIP(host).IsLoopback() {
		for _, ctr := range from.Spec.Template.Spec.Containers {
			for _, cp := range ctr.Ports {
				if cp.ContainerPort == port {
					return
				}
			}
		}
		c.r.add(pw, "url %s: no app container in the pod listens on port %d", p.url, port)
		return
	}
	svcName := strings.Split(host, ".")[0]
	svc := c.service(svcName)
	if svc == nil {
		c.r.add(pw, "url %s: there is no Service %q", p.url, svcName)
		return
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		c.r.add(pw, "url %s: Service %q has no port %d", p.url, svcName, port)
		return
	}
	targets := 0
	for _, d := range c.b.deployments {
		if !c.selects(svc.Spec.Selector, d) {
			continue
		}
		targets++
		ctr, cport := resolvePodPort(&d.Spec.Template.Spec, sp.TargetPort)
		if ctr != ferryContainer || cport != ferryPort {
			c.r.add(pw, "url %s: Service %q sends port %d to %q port %d of Deployment/%s, not to its Ferry (%d)",
				p.url, svcName, port, ctr, cport, d.Name, ferryPort)
			continue
		}
		if u.Path != ingestPath {
			c.r.add(pw, "url %s: a Ferry peer's path is %s", p.url, ingestPath)
		}
		if !c.ingressAllowed(from, d, sp.TargetPort) {
			c.r.add(pw, "the NetworkPolicies of Deployment/%s do not let Deployment/%s reach its port %s",
				d.Name, from.Name, sp.TargetPort.String())
		}
	}
	if targets == 0 {
		c.r.add(pw, "url %s: Service %q selects no pods", p.url, svcName)
	}
}

// ---- Services, budgets, autoscalers, network policies ----------------------

func (c *checker) checkService(s *corev1.Service) {
	where := "Service/" + s.Name
	if len(s.Spec.Selector) == 0 {
		c.r.add(where, "has no selector")
		return
	}
	c.checkLabels(where+" spec.selector", s.Spec.Selector)
	n := 0
	for _, d := range c.b.deployments {
		if !c.selects(s.Spec.Selector, d) {
			continue
		}
		n++
		for _, sp := range s.Spec.Ports {
			if ctr, _ := resolvePodPort(&d.Spec.Template.Spec, sp.TargetPort); ctr == "" {
				c.r.add(where, "targetPort %s of port %d matches no container port of Deployment/%s",
					sp.TargetPort.String(), sp.Port, d.Name)
			}
		}
	}
	if n == 0 {
		c.r.add(where, "selects no pods")
	}
}

func (c *checker) checkDisruptionBudgets() {
	covered := map[string]bool{}
	for _, p := range c.b.pdbs {
		where := "PodDisruptionBudget/" + p.Name
		if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
			c.r.add(where, "set exactly one of minAvailable and maxUnavailable")
		}
		if p.Spec.MaxUnavailable != nil && p.Spec.MaxUnavailable.Type == intstr.Int && p.Spec.MaxUnavailable.IntVal < 1 {
			c.r.add(where, "maxUnavailable %d blocks every eviction (node drains hang)", p.Spec.MaxUnavailable.IntVal)
		}
		n := 0
		for _, d := range c.b.deployments {
			if p.Spec.Selector == nil || !c.selectsWith(p.Spec.Selector, d) {
				continue
			}
			n++
			covered[d.Name] = true
			if p.Spec.MinAvailable != nil && p.Spec.MinAvailable.Type == intstr.Int &&
				d.Spec.Replicas != nil && p.Spec.MinAvailable.IntVal >= *d.Spec.Replicas {
				c.r.add(where, "minAvailable %d with %d replicas of Deployment/%s blocks every eviction",
					p.Spec.MinAvailable.IntVal, *d.Spec.Replicas, d.Name)
			}
		}
		if n == 0 {
			c.r.add(where, "selects no pods")
		}
	}
	for _, d := range c.b.deployments {
		if !covered[d.Name] {
			c.r.add("Deployment/"+d.Name, "no PodDisruptionBudget covers it")
		}
	}
}

func (c *checker) checkAutoscalers() {
	covered := map[string]bool{}
	for _, h := range c.b.hpas {
		where := "HorizontalPodAutoscaler/" + h.Name
		ref := h.Spec.ScaleTargetRef
		d := c.deployment(ref.Name)
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || d == nil {
			c.r.add(where, "scaleTargetRef %s %s/%s is not a Deployment of the overlay", ref.APIVersion, ref.Kind, ref.Name)
			continue
		}
		covered[d.Name] = true
		minR := int32(1)
		if h.Spec.MinReplicas != nil {
			minR = *h.Spec.MinReplicas
		}
		if d.Spec.Replicas != nil && minR != *d.Spec.Replicas {
			c.r.add(where, "minReplicas %d differs from Deployment/%s replicas %d (each apply would fight the autoscaler)",
				minR, d.Name, *d.Spec.Replicas)
		}
		if h.Spec.MaxReplicas < minR {
			c.r.add(where, "maxReplicas %d is below minReplicas %d", h.Spec.MaxReplicas, minR)
		}
		if len(h.Spec.Metrics) == 0 {
			c.r.add(where, "has no metrics")
		}
	}
	for _, d := range c.b.deployments {
		if !covered[d.Name] {
			c.r.add("Deployment/"+d.Name, "no HorizontalPodAutoscaler targets it")
		}
	}
}

func (c *checker) checkNetworkPolicies() {
	for _, np := range c.b.netpols {
		where := "NetworkPolicy/" + np.Name
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			c.r.add(where, "policyTypes must include Ingress")
		}
		n := 0
		for _, d := range c.b.deployments {
			if c.selectsWith(&np.Spec.PodSelector, d) {
				n++
			}
		}
		if n == 0 {
			c.r.add(where, "selects no pods")
		}
	}
	for _, d := range c.b.deployments {
		policies := c.policiesFor(d)
		if len(policies) == 0 {
			c.r.add("Deployment/"+d.Name, "no NetworkPolicy restricts ingress to its pods")
			continue
		}
		// Ferry's port never accepts from everywhere: on a publisher only
		// the app (loopback) posts to it; on a consumer, only its peers.
		for _, np := range policies {
			for _, rule := range np.Spec.Ingress {
				if !ruleCoversPort(d, rule.Ports, ferryPort) {
					continue
				}
				if openTo(rule.From) {
					c.r.add("NetworkPolicy/"+np.Name, "lets every source reach Ferry's port %d of Deployment/%s",
						ferryPort, d.Name)
				}
			}
		}
	}
}

func (c *checker) policiesFor(d *appsv1.Deployment) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, np := range c.b.netpols {
		if slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && c.selectsWith(&np.Spec.PodSelector, d) {
			out = append(out, np)
		}
	}
	return out
}

// ingressAllowed: may pods of from reach port of to's pods? (The same
// namespace; a pod no policy selects accepts everything.)
func (c *checker) ingressAllowed(from, to *appsv1.Deployment, port intstr.IntOrString) bool {
	_, num := resolvePodPort(&to.Spec.Template.Spec, port)
	policies := c.policiesFor(to)
	if len(policies) == 0 {
		return true
	}
	nsLabels := labels.Set{"kubernetes.io/metadata.name": c.exp.namespace}
	if ns, ok := c.b.namespaces[c.exp.namespace]; ok {
		for k, v := range ns.Labels {
			nsLabels[k] = v
		}
	}
	for _, np := range policies {
		for _, rule := range np.Spec.Ingress {
			if !ruleCoversPort(to, rule.Ports, num) {
				continue
			}
			if len(rule.From) == 0 {
				return true
			}
			for _, peer := range rule.From {
				if peer.IPBlock != nil {
					continue
				}
				if peer.NamespaceSelector != nil && !selectorMatches(peer.NamespaceSelector, nsLabels) {
					continue
				}
				if peer.PodSelector == nil || selectorMatches(peer.PodSelector, from.Spec.Template.Labels) {
					return true
				}
			}
		}
	}
	return false
}

func ruleCoversPort(d *appsv1.Deployment, ports []networkingv1.NetworkPolicyPort, num int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if p.Port == nil {
			return true
		}
		_, n := resolvePodPort(&d.Spec.Template.Spec, *p.Port)
		if p.Port.Type == intstr.Int {
			n = p.Port.IntVal
		}
		end := n
		if p.EndPort != nil {
			end = *p.EndPort
		}
		if n != 0 && num >= n && num <= end {
			return true
		}
	}
	return false
}

// openTo: does a rule's from list admit any pod of any namespace?
func openTo(from []networkingv1.NetworkPolicyPeer) bool {
	if len(from) == 0 {
		return true
	}
	for _, p := range from {
		if p.IPBlock != nil && (p.IPBlock.CIDR == "0.0.0.0/0" || p.IPBlock.CIDR == "::/0") {
			return true
		}
		if p.NamespaceSelector != nil && isEmptySelector(p.NamespaceSelector) &&
			(p.PodSelector == nil || isEmptySelector(p.PodSelector)) {
			return true
		}
	}
	return false
}

func isEmptySelector(s *metav1.LabelSelector) bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

func selectorMatches(s *metav1.LabelSelector, l map[string]string) bool {
	sel, err := metav1.LabelSelectorAsSelector(s)
	return err == nil && sel.Matches(labels.Set(l))
}

// selects: a Service-style selector (map) picks d's pods.
func (c *checker) selects(sel map[string]string, d *appsv1.Deployment) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(d.Spec.Template.Labels))
}

// selectsWith: a LabelSelector picks d's pods (an empty one picks all).
func (c *checker) selectsWith(sel *metav1.LabelSelector, d *appsv1.Deployment) bool {
	return selectorMatches(sel, d.Spec.Template.Labels)
}

func (c *checker) deployment(name string) *appsv1.Deployment {
	for _, d := range c.b.deployments {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func (c *checker) service(name string) *corev1.Service {
	for _, s := range c.b.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}
