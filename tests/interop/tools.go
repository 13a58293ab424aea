//go:build tools

// Package interop pins the Thanos v0.42.4 command so that `go mod tidy` keeps
// its full dependency graph in go.mod/go.sum; build.sh then builds it with
// `go build github.com/thanos-io/thanos/cmd/thanos`.
package interop

import _ "github.com/thanos-io/thanos/cmd/thanos"
