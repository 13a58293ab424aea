package main

import (
	"archive/zip"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// k8sSchemas writes the strict schemas of one Kubernetes version from the
// kubernetes-validate wheel, one self-contained file per kind, named as
// kubeconform looks them up (deployment-apps-v1.json).
//
// In the wheel, a kind's schema refers to the shared definitions by URL
// ("/api/_definitions.json#/$defs/..."), which kubernetes-validate maps back
// to its _definitions.json; kubeconform cannot be told about that URL, and
// compiling the whole 5 MB of definitions for every kind would be slow. So
// each kind's file gets the definitions it uses, and only those, under its
// own $defs.
func k8sSchemas(wheel, version, out string) error {
	zr, err := zip.OpenReader(wheel)
	if err != nil {
		return err
	}
	defer zr.Close()
	dir := "kubernetes_validate/kubernetes-json-schema/v" + strings.TrimPrefix(version, "v") + "-local-strict/"
	read := func(f *zip.File) (map[string]any, error) {
		rc, err := f.Open()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		var schema map[string]any
		if err := json.NewDecoder(rc).Decode(&schema); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name, err)
		}
		return schema, nil
	}
	var kinds []*zip.File
	var defs map[string]any
	for _, f := range zr.File {
		if !strings.HasPrefix(f.Name, dir) || !strings.HasSuffix(f.Name, ".json") {
			continue
		}
		switch path.Base(f.Name) {
		case "_definitions.json":
			all, err := read(f)
			if err != nil {
				return err
			}
			defs, _ = all["$defs"].(map[string]any)
		case "all.json":
		default:
			kinds = append(kinds, f)
		}
	}
	if defs == nil || len(kinds) == 0 {
		return fmt.Errorf("%s has no schemas in %s", wheel, dir)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, f := range kinds {
		schema, err := read(f)
		if err != nil {
			return err
		}
		delete(schema, "$id")
		used := map[string]any{}
		pending := localRefs(schema)
		for len(pending) > 0 {
			name := pending[0]
			pending = pending[1:]
			if _, done := used[name]; done {
				continue
			}
			def, ok := defs[name]
			if !ok {
				return fmt.Errorf("%s: no definition %s", f.Name, name)
			}
			used[name] = def
			pending = append(pending, localRefs(def)...)
		}
		if len(used) > 0 {
			schema["$defs"] = used
		}
		body, err := json.Marshal(schema)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, path.Base(f.Name)), body, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("%d schemas of Kubernetes %s in %s\n", len(kinds), version, out)
	return nil
}

// localRefs points every reference to a shared definition at the file's own
// $defs and returns the names of the definitions referred to.
func localRefs(node any) []string {
	var names []string
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			if s, ok := v.(string); ok && k == "$ref" {
				for _, prefix := range []string{"/api/_definitions.json#/$defs/", "_definitions.json#/$defs/", "#/$defs/"} {
					if name, ok := strings.CutPrefix(s, prefix); ok {
						n[k] = "#/$defs/" + name
						names = append(names, name)
						break
					}
				}
			} else {
				names = append(names, localRefs(v)...)
			}
		}
	case []any:
		for _, v := range n {
			names = append(names, localRefs(v)...)
		}
	}
	return names
}

type crd struct {
	Kind string `json:"kind"`
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Versions []struct {
			Name   string `json:"name"`
			Served bool   `json:"served"`
			Schema struct {
				OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// crdSchemas turns CustomResourceDefinitions into the JSON schemas
// kubeconform reads, the way kubeconform's openapi2jsonschema.py does: one
// file per served version, <group>/<kind>_<version>.json (kind lowercased),
// strict (an object schema with properties admits no other properties unless
// it preserves unknown fields), int-or-string as either.
func crdSchemas(in, out string) error {
	files, err := filepath.Glob(filepath.Join(in, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no CRD files in %s", in)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var c crd
		if err := yaml.Unmarshal(raw, &c); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if c.Kind != "CustomResourceDefinition" || c.Spec.Group == "" || c.Spec.Names.Kind == "" {
			return fmt.Errorf("%s: not a CustomResourceDefinition", file)
		}
		for _, v := range c.Spec.Versions {
			if !v.Served || v.Schema.OpenAPIV3Schema == nil {
				continue
			}
			body, err := json.Marshal(strict(v.Schema.OpenAPIV3Schema))
			if err != nil {
				return err
			}
			dir := filepath.Join(out, c.Spec.Group)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			name := filepath.Join(dir, strings.ToLower(c.Spec.Names.Kind)+"_"+v.Name+".json")
			if err := os.WriteFile(name, body, 0o644); err != nil {
				return err
			}
			fmt.Printf("schema of %s/%s %s in %s\n", c.Spec.Group, v.Name, c.Spec.Names.Kind, name)
		}
	}
	return nil
}

// strict makes an OpenAPI v3 schema, as a CRD carries it, strict and replaces
// the Kubernetes extensions JSON schema does not know.
func strict(node any) any {
	switch n := node.(type) {
	case map[string]any:
		if n["x-kubernetes-int-or-string"] == true || n["format"] == "int-or-string" {
			return map[string]any{"oneOf": []any{
				map[string]any{"type": "string"},
				map[string]any{"type": "integer"},
			}}
		}
		for k, v := range n {
			if props, ok := v.(map[string]any); ok && k == "properties" {
				// A map of property names, not a schema.
				for name, p := range props {
					props[name] = strict(p)
				}
				continue
			}
			n[k] = strict(v)
		}
		if _, ok := n["properties"]; ok && n["x-kubernetes-preserve-unknown-fields"] != true {
			if _, set := n["additionalProperties"]; !set {
				n["additionalProperties"] = false
			}
		}
		if t, ok := n["type"].(string); ok && n["nullable"] == true {
			n["type"] = []any{t, "null"}
		}
		return n
	case []any:
		for i, v := range n {
			n[i] = strict(v)
		}
		return n
	default:
		return node
	}
}
