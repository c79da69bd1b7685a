//go:build tools

// Package tools pins the etcd server built by scripts/kube-tools.sh for the harness's
// kube-apiserver. Never compiled: the blank import only keeps go.mod complete.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
