#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from the Go module proxy
# (no Docker, no downloads of prebuilt binaries) into a cache folder keyed by version, and prints
# that folder. Reuses it when all binaries are already there. envtest finds them through
# KUBEBUILDER_ASSETS=<printed folder>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${HERALD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}
out="$cache/control-plane/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION"
bins=(kube-apiserver kube-controller-manager kubectl etcd)

have_all() { for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done; }
if have_all; then echo "$out"; exit 0; fi

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log() { echo "build-control-plane: $*" >&2; }

# Kubernetes: its go.mod replaces the staging modules (k8s.io/api, ...) with local paths, so it
# cannot be `go install`ed. A wrapper module requires it and points every staging module at the
# published v0.x version instead.
kmod="$work/kube"
mkdir -p "$kmod"
cat >"$kmod/go.mod" <<MOD
module herald.local/kubebuild

go 1.26
MOD
cat >"$kmod/tools.go" <<'GO'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
(
  cd "$kmod"
  export GOFLAGS=-mod=mod
  go mod download "k8s.io/kubernetes@v$KUBE_VERSION"
  gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  minor=${KUBE_VERSION#1.}
  # Every "k8s.io/x => ./staging/src/k8s.io/x" replace becomes "k8s.io/x => k8s.io/x v0.<minor>".
  replaces=$(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod")
  [ -n "$replaces" ] || { log "no staging replaces found in $gomod"; exit 1; }
  go mod edit -require="k8s.io/kubernetes@v$KUBE_VERSION"
  for m in $replaces; do go mod edit -replace="$m=$m@v0.$minor"; done
  go mod tidy >/dev/null 2>&1 || true
  go get "k8s.io/kubernetes@v$KUBE_VERSION" >/dev/null
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION"
  for b in kube-apiserver kube-controller-manager kubectl; do
    [ -x "$out/$b" ] && continue
    log "building $b v$KUBE_VERSION (several minutes on a cold cache)"
    go build -trimpath -ldflags "$ldflags" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv "$out/$b.tmp" "$out/$b"
  done
)

# etcd: also has replace directives; wrap it likewise. go.etcd.io/etcd/server/v3 is etcd's main.
emod="$work/etcd"
mkdir -p "$emod"
cat >"$emod/go.mod" <<MOD
module herald.local/etcdbuild

go 1.26
MOD
cat >"$emod/tools.go" <<'GO'
//go:build tools

package etcdbuild

import _ "go.etcd.io/etcd/server/v3"
GO
(
  cd "$emod"
  export GOFLAGS=-mod=mod
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
  if [ ! -x "$out/etcd" ]; then
    log "building etcd v$ETCD_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$out/etcd.tmp" "$out/etcd"
  fi
)
have_all || { log "missing binaries in $out"; exit 1; }
echo "$out"
