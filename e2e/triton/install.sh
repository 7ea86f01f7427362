#!/usr/bin/env bash
# Installs the tritonserver binary shipped inside the nvidia-pytriton wheel into a cache outside the repo,
# plus the small Python environment its Python-backend stub runs models in.
#
# --no-deps keeps PyTriton's numpy<2 pin out of the project's environment: only the binary, its
# backends and the stubs are used. The stubs are built against the numpy 1.x ABI (numpy 2 arrays come
# back with the wrong byte size), and the stub takes its packages from the first `python3` on PATH,
# so models run in stub-env-X.Y, a venv of this interpreter that holds numpy<2 and nothing else.
# A second run installs nothing. Output: the path of the tritonserver binary, on the last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

version="${PYTRITON_VERSION:-0.7.0}"
stub_numpy="numpy>=1.26,<2"
cache_root="${MODELPILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelpilot}"
dest="$cache_root/triton/pytriton-$version"
binary="$dest/pytriton/tritonserver/bin/tritonserver"
log() { echo "[triton-install] $*" >&2; }

# The interpreter whose version the stub env must match: the project's venv when there is one.
python="${MODELPILOT_PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
stub_env="$dest/stub-env-$pyver"

pip_target() {  # pip_target DIR REQUIREMENT...: install files only, no dependencies, nothing compiled
  local target="$1"
  shift
  "$python" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile --target "$target" "$@" >&2
}

mkdir -p "$cache_root/triton"
tmp=""
trap 'if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi' EXIT

if [[ ! -f "$dest/.complete" || ! -x "$binary" ]]; then
  log "installing nvidia-pytriton==$version (no deps) with $python"
  tmp="$(mktemp -d "$cache_root/triton/.pytriton-$version.XXXXXX")"
  pip_target "$tmp" "nvidia-pytriton==$version"
  if [[ ! -x "$tmp/pytriton/tritonserver/bin/tritonserver" ]]; then
    log "the wheel has no pytriton/tritonserver/bin/tritonserver"
    exit 1
  fi
  touch "$tmp/.complete"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  tmp=""
fi

if [[ ! -f "$stub_env/.complete" ]]; then
  log "creating the Python-backend environment $stub_env ($stub_numpy)"
  tmp="$(mktemp -d "$dest/.stub-env-$pyver.XXXXXX")"
  "$python" -m venv --without-pip "$tmp"
  pip_target "$tmp/lib/python$pyver/site-packages" "$stub_numpy"
  touch "$tmp/.complete"
  rm -rf "$stub_env"
  mv "$tmp" "$stub_env"
  tmp=""
fi

echo "$binary"
