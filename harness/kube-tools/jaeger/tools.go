//go:build tools

// Package tools pins the Jaeger binary built by scripts/kube-tools.sh for the harness's
// tracing backend (harness/src/jaeger.rs). Never compiled: the blank import only keeps
// go.mod complete.
package tools

import (
	_ "github.com/jaegertracing/jaeger/cmd/jaeger"
)
