package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"go.yaml.in/yaml/v3"
)

// shape is what a key holds: a mapping, a sequence or a scalar.
type shape string

func shapeOf(n *yaml.Node) shape {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a value"
	}
}

// walk records the shape of every key path under n ("remotes[].tls.ca_file").
// null values are recorded as nothing: any key may be left empty.
// visit says whether to look inside n.
func walk(n *yaml.Node, path string, visit func(path string, n *yaml.Node) bool) {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			walk(c, path, visit)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Tag == "!!null" {
		return
	}
	if path != "" && !visit(path, n) {
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if path != "" {
				key = path + "." + key
			}
			walk(n.Content[i+1], key, visit)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			walk(c, path+"[]", visit)
		}
	}
}

// configKeys checks every config.yaml in the ConfigMaps of the manifests
// against the keys, and their shapes, of the example config, which lists
// every key the service knows (a unit test loads it).
func configKeys(example string, manifests []string) error {
	raw, err := os.ReadFile(example)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", example, err)
	}
	known := map[string]shape{}
	walk(&doc, "", func(path string, n *yaml.Node) bool {
		known[path] = shapeOf(n)
		return true
	})

	var problems []string
	checked := 0
	for _, file := range manifests {
		raw, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var obj struct {
				Kind     string `yaml:"kind"`
				Metadata struct {
					Name string `yaml:"name"`
				} `yaml:"metadata"`
				Data map[string]string `yaml:"data"`
			}
			if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			config, ok := obj.Data["config.yaml"]
			if obj.Kind != "ConfigMap" || !ok {
				continue
			}
			where := fmt.Sprintf("%s: ConfigMap %s: config.yaml", file, obj.Metadata.Name)
			var cfg yaml.Node
			if err := yaml.Unmarshal([]byte(config), &cfg); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", where, err))
				continue
			}
			walk(&cfg, "", func(path string, n *yaml.Node) bool {
				want, ok := known[path]
				switch {
				case !ok:
					problems = append(problems, fmt.Sprintf("%s: unknown key %s (line %d; not in %s)", where, path, n.Line, example))
					return false
				case want != shapeOf(n):
					problems = append(problems, fmt.Sprintf("%s: %s is %s, expected %s (line %d)", where, path, shapeOf(n), want, n.Line))
					return false
				}
				return true
			})
			checked++
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, p)
		}
		return fmt.Errorf("%d problem(s) in the config.yaml of the rendered ConfigMaps", len(problems))
	}
	if checked == 0 {
		return fmt.Errorf("no ConfigMap with a config.yaml in %v", manifests)
	}
	fmt.Printf("config.yaml of %d ConfigMap(s): every key is one config/example.yaml has\n", checked)
	return nil
}
