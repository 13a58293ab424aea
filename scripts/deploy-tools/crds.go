//go:build crds

package main

// The API whose CRDs scripts/deploy-check generates with controller-gen
// (`go tool controller-gen ... paths=<this package>`); imported here only so
// that go.mod pins its version.
import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
