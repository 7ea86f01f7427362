#!/usr/bin/env bash
# Builds istiod (pilot-discovery) and istioctl from the Go module proxy, once per ISTIO_VERSION.
# Output: the bin directory (printed on the last line); next to it, crds/istio.yaml from the same
# module. Separate from build.sh's cache key, so adding Istio rebuilds no Kubernetes binary.
# istio.io/istio's go.mod has no replace lines: `go install` works without a consumer module.
# Measured on 2 cores: pilot-discovery ~195 s and istioctl ~30 s with the modules downloaded.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${MODELPILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelpilot}"
bin="$cache_root/istio/$ISTIO_VERSION/bin"
stamp="$bin/.complete"
if [[ -f "$stamp" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin" "$bin/../crds"
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
log() { echo "[istio-build] $*" >&2; }
for cmd in pilot/cmd/pilot-discovery istioctl/cmd/istioctl; do
  if [[ ! -x "$bin/$(basename "$cmd")" ]]; then
    log "building $(basename "$cmd") at istio.io/istio@$ISTIO_VERSION"
    GOBIN="$bin" go install -trimpath -ldflags "-s -w" "istio.io/istio/$cmd@$ISTIO_VERSION"
  fi
done
module_dir="$(go mod download -json "istio.io/istio@$ISTIO_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
cp -f "$module_dir/manifests/charts/base/files/crd-all.gen.yaml" "$bin/../crds/istio.yaml"
touch "$stamp"
log "done: $bin"
echo "$bin"
