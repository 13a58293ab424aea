// Command deploy-tools holds the helpers scripts/deploy-check needs to check
// deploy/ offline:
//
//	deploy-tools k8s-schemas WHEEL VERSION OUT_DIR
//	    Kubernetes JSON schemas for kubeconform, taken from the
//	    kubernetes-validate wheel (PyPI), which ships the schemas of every
//	    Kubernetes minor version generated from its OpenAPI document.
//	deploy-tools crd-schemas CRD_DIR OUT_DIR
//	    JSON schemas for kubeconform from CustomResourceDefinitions.
//	deploy-tools config-keys EXAMPLE MANIFEST...
//	    Checks that every config.yaml carried by a ConfigMap in MANIFEST uses
//	    only keys config/example.yaml has, in the same shape.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch args := os.Args[2:]; os.Args[1] {
	case "k8s-schemas":
		if len(args) != 3 {
			usage()
		}
		err = k8sSchemas(args[0], args[1], args[2])
	case "crd-schemas":
		if len(args) != 2 {
			usage()
		}
		err = crdSchemas(args[0], args[1])
	case "config-keys":
		if len(args) < 2 {
			usage()
		}
		err = configKeys(args[0], args[1:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "deploy-tools %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  deploy-tools k8s-schemas WHEEL VERSION OUT_DIR
  deploy-tools crd-schemas CRD_DIR OUT_DIR
  deploy-tools config-keys EXAMPLE MANIFEST...`)
	os.Exit(2)
}
