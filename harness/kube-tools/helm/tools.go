//go:build tools

// Package tools pins the helm CLI built by scripts/kube-tools.sh for the chart tests.
// Never compiled: the blank import only keeps go.mod complete.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
