#!/usr/bin/env bash
# Builds the helm CLI from the helm.sh/helm/v3 Go module (no binary downloads), once per version.
# Output: the helm binary's path, printed on the last line. A second run rebuilds nothing.
# Cache: ${MODELPILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelpilot}/helm/<version>/bin/helm
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

cache_root="${MODELPILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelpilot}"
dir="$cache_root/helm/$HELM_VERSION"
bin="$dir/bin/helm"
# Bump when the build recipe changes, so cached binaries from an older recipe get rebuilt.
RECIPE=2
if [[ -x "$bin" && "$(cat "$dir/.complete" 2>/dev/null)" == "$RECIPE" ]]; then
  echo "$bin"
  exit 0
fi
log() { echo "[build-helm] $*" >&2; }
command -v go >/dev/null || { log "go is required (the Go toolchain builds helm from the module proxy)"; exit 1; }
mkdir -p "$dir/bin"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
# The link-time variables helm's own Makefile sets: its version, and the Kubernetes version that
# `helm template`/`helm lint` assume (derived from client-go v0.X -> 1.X; unset, it is v1.20).
mod_dir="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
k8s_minor="$(awk '$1 == "k8s.io/client-go" {print $2}' "$mod_dir/go.mod" | cut -d. -f2)"
[[ -n "$k8s_minor" ]] || { log "cannot find k8s.io/client-go in helm's go.mod"; exit 1; }
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
done
log "building helm $HELM_VERSION"
if ! GOBIN="$dir/bin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2; then
  # `go install pkg@version` refuses modules with replace directives: fall back to a consumer module.
  log "go install failed; building through a consumer module"
  src="$dir/src"
  rm -rf "$src" && mkdir -p "$src"
  cat > "$src/go.mod" <<MOD
module modelpilot.local/helmbuild

go 1.24

require helm.sh/helm/v3 $HELM_VERSION
MOD
  cat > "$src/tools.go" <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
  (cd "$src" && go mod tidy >&2 && go build -trimpath -ldflags "$ldflags" -o "$bin" helm.sh/helm/v3/cmd/helm >&2)
fi
"$bin" version --short >&2
echo "$RECIPE" > "$dir/.complete"
log "done: $bin"
echo "$bin"
