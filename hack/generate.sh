#!/usr/bin/env bash
# Runs controller-gen; the one place its arguments live.
#   hack/generate.sh CONTROLLER_GEN manifests  CRDs -> config/crd/bases, ClusterRole "manager-role"
#                                              (+kubebuilder:rbac markers) -> config/rbac/role.yaml
#   hack/generate.sh CONTROLLER_GEN generate   zz_generated.deepcopy.go in every api/ package
#   hack/generate.sh CONTROLLER_GEN check      regenerate both into a temporary folder and exit 1,
#                                              showing the diff, when the committed files are stale
# The Makefile passes $(CONTROLLER_GEN) (make manifests / generate / verify-generated).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cg=${1:?usage: $0 CONTROLLER_GEN manifests|generate|check}
mode=${2:?usage: $0 CONTROLLER_GEN manifests|generate|check}

# Packages with the API types (CRDs, deepcopy) and with the +kubebuilder:rbac markers.
crd_paths=./api/...
rbac_paths="./controllers/...;./internal/operator/..."
api_dirs() { find api -name '*_types.go' -exec dirname {} \; | sort -u; }

# manifests OUT: CRDs into OUT/crd, role.yaml into OUT/rbac.
manifests() {
  "$cg" crd paths="$crd_paths" output:crd:artifacts:config="$1/crd"
  "$cg" rbac:roleName=manager-role paths="$rbac_paths" output:rbac:artifacts:config="$1/rbac"
}
# objects OUT: deepcopy code of api/<pkg> into OUT/<pkg>.
objects() {
  local dir
  for dir in $(api_dirs); do
    mkdir -p "$1/$dir"
    "$cg" object paths="./$dir" output:object:dir="$1/$dir"
  done
}

case $mode in
  manifests)
    # Start clean so a renamed or removed kind leaves no stale CRD behind.
    rm -f config/crd/bases/*.yaml
    mkdir -p config/crd/bases config/rbac
    "$cg" crd paths="$crd_paths" output:crd:artifacts:config=config/crd/bases
    "$cg" rbac:roleName=manager-role paths="$rbac_paths" output:rbac:artifacts:config=config/rbac
    ;;
  generate)
    objects .
    ;;
  check)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    manifests "$tmp"
    objects "$tmp"
    stale=0
    diff -ru config/crd/bases "$tmp/crd" || stale=1
    diff -u config/rbac/role.yaml "$tmp/rbac/role.yaml" || stale=1
    for dir in $(api_dirs); do
      diff -u "$dir/zz_generated.deepcopy.go" "$tmp/$dir/zz_generated.deepcopy.go" || stale=1
    done
    if [ "$stale" != 0 ]; then
      echo "verify-generated: generated files are stale; run 'make manifests generate'" >&2
      exit 1
    fi
    echo "verify-generated: CRDs, config/rbac/role.yaml and deepcopy code are up to date" >&2
    ;;
  *) echo "usage: $0 CONTROLLER_GEN manifests|generate|check" >&2; exit 2 ;;
esac
