package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"
)

// The kinds the manifests may use, each with the Go type of the Kubernetes
// API it is decoded into. Anything else fails: add the kind here (and its
// checks) before using it.
var kinds = map[string]func() any{
	"v1 Namespace":                           func() any { return &corev1.Namespace{} },
	"v1 ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1 Secret":                              func() any { return &corev1.Secret{} },
	"v1 Service":                             func() any { return &corev1.Service{} },
	"apps/v1 Deployment":                     func() any { return &appsv1.Deployment{} },
	"policy/v1 PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2 HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"networking.k8s.io/v1 NetworkPolicy":     func() any { return &networkingv1.NetworkPolicy{} },
}

// bundle is one rendered overlay, decoded.
type bundle struct {
	namespaces  map[string]*corev1.Namespace
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	services    []*corev1.Service
	deployments []*appsv1.Deployment
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	netpols     []*networkingv1.NetworkPolicy
	count       map[string]int // objects per kind, for the summary
}

// render runs kustomize (the same Go module kubectl embeds) on dir, in
// the order `kubectl kustomize` prints (namespaces, then config, ...).
func render(dir string) ([]byte, error) {
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy
	k := krusty.MakeKustomizer(opts)
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	return m.AsYaml()
}

// splitDocs splits a multi-document YAML stream, dropping empty documents.
func splitDocs(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// decodeAll decodes every document of a rendered overlay strictly into the
// API type of its apiVersion and kind: a duplicate key, an unknown or
// wrongly cased field, a value of the wrong type, a kind not in kinds all
// fail. It returns what decoded and one error per problem.
func decodeAll(data []byte) (*bundle, []error) {
	b := &bundle{
		namespaces: map[string]*corev1.Namespace{},
		configMaps: map[string]*corev1.ConfigMap{},
		secrets:    map[string]*corev1.Secret{},
		count:      map[string]int{},
	}
	docs, err := splitDocs(data)
	if err != nil {
		return b, []error{fmt.Errorf("splitting the YAML stream: %w", err)}
	}
	if len(docs) == 0 {
		return b, []error{errors.New("the overlay renders no objects")}
	}
	var errs []error
	for i, doc := range docs {
		obj, where, err := decodeOne(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", i+1, where, err))
			continue
		}
		b.add(obj)
	}
	return b, errs
}

func decodeOne(doc []byte) (any, string, error) {
	js, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, "?", fmt.Errorf("invalid YAML: %w", err)
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return nil, "?", fmt.Errorf("not an object: %w", err)
	}
	where := head.Kind + "/" + head.Metadata.Name
	gvk := head.APIVersion + " " + head.Kind
	newObj, ok := kinds[gvk]
	if !ok {
		return nil, where, fmt.Errorf("unknown kind %q (apiVersion %q); known: %s",
			head.Kind, head.APIVersion, strings.Join(knownKinds(), ", "))
	}
	obj := newObj()
	// Case-sensitive, like the API server, with every strict option:
	// strict lists the unknown and duplicate fields; err is the first value
	// of a wrong type (and then strict is empty: fix that one first).
	strict, err := sigsjson.UnmarshalStrict(js, obj)
	var msgs []string
	if err != nil {
		msgs = append(msgs, err.Error())
	}
	for _, e := range strict {
		msgs = append(msgs, e.Error())
	}
	if len(msgs) > 0 {
		return nil, where, errors.New(strings.Join(msgs, "; "))
	}
	if head.Metadata.Name == "" {
		return nil, where, errors.New("metadata.name is empty")
	}
	return obj, where, nil
}

func knownKinds() []string {
	var out []string
	for k := range kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (b *bundle) add(obj any) {
	switch o := obj.(type) {
	case *corev1.Namespace:
		b.namespaces[o.Name] = o
		b.count["Namespace"]++
	case *corev1.ConfigMap:
		b.configMaps[o.Name] = o
		b.count["ConfigMap"]++
	case *corev1.Secret:
		b.secrets[o.Name] = o
		b.count["Secret"]++
	case *corev1.Service:
		b.services = append(b.services, o)
		b.count["Service"]++
	case *appsv1.Deployment:
		b.deployments = append(b.deployments, o)
		b.count["Deployment"]++
	case *policyv1.PodDisruptionBudget:
		b.pdbs = append(b.pdbs, o)
		b.count["PodDisruptionBudget"]++
	case *autoscalingv2.HorizontalPodAutoscaler:
		b.hpas = append(b.hpas, o)
		b.count["HorizontalPodAutoscaler"]++
	case *networkingv1.NetworkPolicy:
		b.netpols = append(b.netpols, o)
		b.count["NetworkPolicy"]++
	}
}

func (b *bundle) summary() string {
	var parts []string
	total := 0
	for k, n := range b.count {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
		total += n
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d objects: %s", total, strings.Join(parts, ", "))
}
