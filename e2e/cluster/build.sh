#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy, once per version set.
# Output: $MODELPILOT_CLUSTER_BIN (printed on the last line). A second run rebuilds nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${MODELPILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelpilot}"
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_istio-${ISTIO_API_VERSION}_promop-${PROMETHEUS_OPERATOR_VERSION}"
bin="$cache_root/cluster/$key/bin"
src="$cache_root/cluster/$key/src"
stamp="$bin/.complete"
if [[ -f "$stamp" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin" "$src"
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
log() { echo "[cluster-build] $*" >&2; }

# --- Kubernetes: a consumer module that replaces every k8s.io/* staging module with v0.<minor>.<patch>.
staging_version="v0.${K8S_VERSION#v1.}"
k8s_dir="$src/kubernetes"
mkdir -p "$k8s_dir"
if [[ ! -x "$bin/kube-apiserver" || ! -x "$bin/kube-controller-manager" || ! -x "$bin/kube-scheduler" || ! -x "$bin/kubectl" ]]; then
  log "building Kubernetes $K8S_VERSION (staging modules at $staging_version)"
  mod_file="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  staging_modules="$(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$mod_file" | awk '{print $1}' | sort -u)"
  {
    echo "module modelpilot.local/kubebuild"
    echo
    grep -E '^go [0-9.]+' "$mod_file" | head -1
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in $staging_modules; do echo "	$m => $m $staging_version"; done
    echo ")"
  } > "$k8s_dir/go.mod"
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean"
  cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$k8s_dir" && go get "${pkgs[@]/%/@$K8S_VERSION}" >&2 && go build -trimpath -ldflags "$ldflags" -o "$bin/" "${pkgs[@]}")
fi

# --- etcd: a consumer module whose main calls etcdmain.Main.
if [[ ! -x "$bin/etcd" ]]; then
  log "building etcd $ETCD_VERSION"
  etcd_dir="$src/etcd"
  mkdir -p "$etcd_dir"
  cat > "$etcd_dir/go.mod" <<MOD
module modelpilot.local/etcdbuild

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat > "$etcd_dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$etcd_dir" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .)
fi

# --- kwok: the fake-node controller, plus the stage configs shipped in its module.
if [[ ! -x "$bin/kwok" ]]; then
  log "building kwok $KWOK_VERSION"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
kwok_mod_dir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
rm -rf "$bin/../stages" && mkdir -p "$bin/../stages"
for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
             pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  cp -f "$kwok_mod_dir/kustomize/stage/$stage.yaml" "$bin/../stages/"
done

# --- Istio CRDs from istio.io/api.
istio_dir="$(go mod download -json "istio.io/api@$ISTIO_API_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
mkdir -p "$bin/../crds"
cp -f "$istio_dir/kubernetes/customresourcedefinitions.gen.yaml" "$bin/../crds/istio.yaml"

# --- Prometheus Operator's ServiceMonitor/PodMonitor CRDs, from its module.
promop_dir="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
cat "$promop_dir"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,podmonitors}.yaml > "$bin/../crds/monitoring.yaml"

touch "$stamp"
log "done: $bin"
echo "$bin"
