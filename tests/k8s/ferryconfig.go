package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ferryConfig is what the checker itself reads from a Ferry config: the
// values the pod around it depends on. Everything else is `ferry
// check-config`'s business.
type ferryConfig struct {
	drainTimeoutMs int64 // -1 when not set
	spoolMaxBytes  int64 // -1 when not set
	peers          []ferryPeer
	envRefs        []secretRef     // {"env": NAME} references
	fileRefs       []string        // paths of {"file": PATH} references
	signingEnv     map[string]bool // env names read as a signing_secret
}

type ferryPeer struct {
	name, kind, url string
	timeoutMs       int64 // -1 when not set
}

type secretRef struct{ path, name string }

func parseFerryConfig(text string) (*ferryConfig, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	cfg := &ferryConfig{drainTimeoutMs: -1, spoolMaxBytes: -1, signingEnv: map[string]bool{}}
	cfg.drainTimeoutMs = intAt(root, "drain_timeout_ms")
	if spool, ok := root["spool"].(map[string]any); ok {
		cfg.spoolMaxBytes = intAt(spool, "max_bytes")
	}
	peers, _ := root["peers"].(map[string]any)
	names := make([]string, 0, len(peers))
	for name := range peers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p, _ := peers[name].(map[string]any)
		peer := ferryPeer{name: name, timeoutMs: intAt(p, "timeout_ms")}
		peer.url, _ = p["url"].(string)
		peer.kind, _ = p["type"].(string)
		if peer.kind == "" && peer.url != "" {
			peer.kind = "http"
		}
		cfg.peers = append(cfg.peers, peer)
		if ref, ok := p["signing_secret"].(map[string]any); ok {
			if env, ok := ref["env"].(string); ok {
				cfg.signingEnv[env] = true
			}
		}
	}
	walkRefs(root, "", cfg)
	return cfg, nil
}

func intAt(m map[string]any, key string) int64 {
	if n, ok := m[key].(json.Number); ok {
		if v, err := n.Int64(); err == nil {
			return v
		}
	}
	return -1
}

// walkRefs collects the secret references: objects of the single key
// "env" or "file" with a string value.
func walkRefs(v any, at string, cfg *ferryConfig) {
	switch t := v.(type) {
	case map[string]any:
		if len(t) == 1 {
			if s, ok := t["env"].(string); ok {
				cfg.envRefs = append(cfg.envRefs, secretRef{at, s})
				return
			}
			if s, ok := t["file"].(string); ok {
				cfg.fileRefs = append(cfg.fileRefs, at+": "+s)
				return
			}
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			walkRefs(t[k], strings.TrimPrefix(at+"."+k, "."), cfg)
		}
	case []any:
		for i, e := range t {
			walkRefs(e, fmt.Sprintf("%s[%d]", at, i), cfg)
		}
	}
}

// placeholderSigningSecret stands in for a signing secret of a Secret the
// user creates: the shape Ferry requires, whsec_ + standard base64.
var placeholderSigningSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("k8s-check placeholder key 32byte"))

// containerEnv resolves the environment a container would get, the way
// the kubelet does: in order, $(NAME) expanding earlier variables, values
// from the overlay's Secrets and ConfigMaps, placeholders for Secrets the
// user creates and for the downward API.
func (c *checker) containerEnv(ctr *corev1.Container, cfg *ferryConfig) []string {
	vals := map[string]string{}
	var order []string
	for _, e := range ctr.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = expandEnv(e.Value, vals)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if s, ok := c.b.secrets[ref.Name]; ok {
				if b, ok := s.Data[ref.Key]; ok {
					v = string(b)
				} else {
					v = s.StringData[ref.Key]
				}
			} else if cfg.signingEnv[e.Name] {
				v = placeholderSigningSecret
			} else {
				v = "placeholder-" + ref.Key
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			if cm, ok := c.b.configMaps[ref.Name]; ok {
				v = cm.Data[ref.Key]
			}
		default:
			v = "placeholder"
		}
		if _, seen := vals[e.Name]; !seen {
			order = append(order, e.Name)
		}
		vals[e.Name] = v
	}
	var env []string
	for _, name := range order {
		if name == "FERRY_CONFIG" { // the checker passes -c instead
			continue
		}
		env = append(env, name+"="+vals[name])
	}
	return env
}

// expandEnv: Kubernetes' $(NAME) expansion; $$ is a literal $, and an
// undefined reference stays as written.
func expandEnv(s string, vals map[string]string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			out.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			out.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i:], ')')
			if end < 0 {
				out.WriteString(s[i:])
				return out.String()
			}
			name := s[i+2 : i+end]
			if v, ok := vals[name]; ok {
				out.WriteString(v)
			} else {
				out.WriteString(s[i : i+end+1])
			}
			i += end
		default:
			out.WriteByte('$')
		}
	}
	return out.String()
}

// runCheckConfig runs `ferry check-config` on the ConfigMap's text with the
// container's environment (tokens and secrets resolved as above).
func (c *checker) runCheckConfig(name string, ctr *corev1.Container, cfg *ferryConfig, text string) error {
	dir, err := os.MkdirTemp("", "k8s-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, name+".json")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(c.ferryBin, "check-config", "-c", file)
	cmd.Env = c.containerEnv(ctr, cfg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		msg := strings.TrimSpace(strings.ReplaceAll(out.String(), file, "ferry.json"))
		return fmt.Errorf("`ferry check-config` rejects it (exit %d):\n    %s",
			exit.ExitCode(), strings.ReplaceAll(msg, "\n", "\n    "))
	}
	if err != nil {
		return fmt.Errorf("cannot run %s: %v", c.ferryBin, err)
	}
	return nil
}
