//go:build tools

// Package tools pins the Kubernetes test binaries (kube-apiserver, kubectl) built by
// scripts/kube-tools.sh. Never compiled: the blank imports only keep go.mod complete.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
