#!/usr/bin/env bash
# Builds the pinned build tools (controller-gen, helm) from the tools module hack/tools into a
# cache folder keyed by their versions, reusing binaries already there, and prints that folder.
#   hack/tools.sh                  build every tool
#   hack/tools.sh controller-gen   build only the named tools
# The versions live in hack/versions.env; hack/tools/go.mod must pin the same ones (checked here,
# never rewritten). HERALD_TOOLS overrides the folder (the Makefile passes its $(TOOLS)).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${HERALD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}
out=${HERALD_TOOLS:-$cache/tools/controller-gen-$CONTROLLER_GEN_VERSION-helm-$HELM_VERSION}
log() { echo "tools: $*" >&2; }

# name -> module, package, ldflags
module_of() {
  case $1 in
    controller-gen) echo sigs.k8s.io/controller-tools ;;
    helm) echo helm.sh/helm/v3 ;;
    *) log "unknown tool $1 (known: controller-gen helm)"; exit 2 ;;
  esac
}
package_of() {
  case $1 in
    controller-gen) echo sigs.k8s.io/controller-tools/cmd/controller-gen ;;
    helm) echo helm.sh/helm/v3/cmd/helm ;;
  esac
}
want_version() {
  case $1 in
    controller-gen) echo "$CONTROLLER_GEN_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
  esac
}
ldflags_of() {
  case $1 in
    # controller-gen stamps its version into every CRD it writes; without this it says "(devel)".
    controller-gen) echo "-s -w -X sigs.k8s.io/controller-tools/pkg/version.version=$CONTROLLER_GEN_VERSION" ;;
    helm) echo "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
  esac
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(controller-gen helm)
mkdir -p "$out"
for t in "${tools[@]}"; do
  mod=$(module_of "$t")
  [ -x "$out/$t" ] && continue
  want=$(want_version "$t")
  pinned=$(cd "$here/tools" && GOWORK=off GOFLAGS=-mod=readonly go list -m -f '{{.Version}}' "$mod")
  if [ "$pinned" != "$want" ]; then
    log "hack/tools/go.mod pins $mod $pinned but hack/versions.env says $want;"
    log "run: (cd hack/tools && go get -tool $(package_of "$t")@$want)"
    exit 1
  fi
  log "building $t $want"
  (cd "$here/tools" && GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -trimpath -ldflags "$(ldflags_of "$t")" -o "$out/$t.tmp" "$(package_of "$t")")
  mv "$out/$t.tmp" "$out/$t"
done
echo "$out"
