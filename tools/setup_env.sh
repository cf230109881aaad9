#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment with the whole OpenMMLab stack.
#
# Idempotent: a stamp of the requirement files is stored in the venv, so a second run that finds
# nothing changed returns within seconds. The slow part, mmcv 2.1.0 built from source with its
# compiled ops, is cached as a wheel OUTSIDE the repo under a key made of the torch version (which
# includes its CUDA tag) and the Python tag, so a re-install never rebuilds it and a wheel built
# against another torch is never picked up (pip's own wheel cache does not key on torch).
#
# Environment:
#   MMEFF_VENV        venv location (default: .venv in the repo)
#   MMEFF_CACHE       cache root (default: ~/.cache/mmeff)
#   MMEFF_PYTHON      interpreter used to create the venv (default: python3)
#   MAX_JOBS          parallel compile jobs for mmcv (default: number of cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMEFF_VENV:-$ROOT/.venv}"
CACHE="${MMEFF_CACHE:-$HOME/.cache/mmeff}"
PYTHON="${MMEFF_PYTHON:-python3}"
MMCV_VERSION=2.1.0
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
t_start=$(date +%s)

stamp_inputs() {
  cat "$ROOT"/requirements/*.txt "$ROOT/tools/setup_env.sh" "$ROOT/setup.py"
  "$VENV/bin/python" -c 'import sys; print(sys.version)'
}

if [[ -x "$VENV/bin/python" && -f "$VENV/.mmeff-stamp" ]] &&
   [[ "$(stamp_inputs | sha256sum | cut -d' ' -f1)" == "$(cat "$VENV/.mmeff-stamp")" ]]; then
  log "environment $VENV is up to date (delete $VENV/.mmeff-stamp to force a re-install)"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet)

log "installing torch + torchvision (requirements/torch.txt; the first time this is ~5 GB)"
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -r "$ROOT/requirements/torch.txt" -r "$ROOT/requirements/build.txt"

TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-torch-$TORCH_VERSION-$PY_TAG"
# Pin what is installed now so that nothing later in this script can swap torch under mmcv.
CONSTRAINTS="$VENV/.mmeff-constraints.txt"
"$PY" -m pip freeze | grep -E '^(torch|torchvision|setuptools)==' > "$CONSTRAINTS"
log "torch $TORCH_VERSION, python $PY_TAG; mmcv wheel cache: $WHEEL_DIR"

shopt -s nullglob
wheels=("$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl)
if (( ${#wheels[@]} == 0 )); then
  log "no cached mmcv wheel for this torch: building mmcv $MMCV_VERSION with ops from source"
  log "(about 10-15 minutes on 2 cores; it happens once per torch/python pair)"
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  "$PY" -m pip download --quiet --no-deps --no-binary=:all: --no-build-isolation \
    -d "$build" "mmcv==$MMCV_VERSION"
  tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
  src="$build/mmcv-$MMCV_VERSION"
  # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes older standards.
  sed -i -E 's/-std=c\+\+(14|17)/-std=c++20/g' "$src/setup.py"
  grep -q -- '-std=c++20' "$src/setup.py" || { log "ERROR: C++20 patch did not apply"; exit 1; }
  t_build=$(date +%s)
  # No build isolation: an isolated build has no torch and silently skips the ops.
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$PY" -m pip wheel --no-build-isolation --no-deps --no-cache-dir -w "$build/dist" "$src" \
    > "$build/build.log" 2>&1 || { tail -50 "$build/build.log"; log "ERROR: mmcv build failed"; exit 1; }
  mkdir -p "$WHEEL_DIR"
  cp "$build"/dist/mmcv-*.whl "$WHEEL_DIR/"
  log "mmcv built in $(( $(date +%s) - t_build )) s and cached in $WHEEL_DIR"
  wheels=("$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl)
else
  log "using cached mmcv wheel ${wheels[0]}"
fi

log "installing mmcv, mmengine, mmdet, mmsegmentation, timm, export and test tools"
"${PIP[@]}" -c "$CONSTRAINTS" "${wheels[0]}" -r "$ROOT/requirements/runtime.txt" \
  -r "$ROOT/requirements/export.txt" -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" -c "$CONSTRAINTS" --no-deps --no-build-isolation -e "$ROOT"

log "checking the stack"
"$PY" - <<'EOF'
import torch, torchvision, mmcv, mmengine, mmdet, mmseg, timm
from mmcv.ops import RoIAlign, nms  # fails if mmcv was built without its compiled ops
import mmdet.models, mmseg.models   # fails with mmcv-lite or a mismatched mmcv
print(f"  torch {torch.__version__}, torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, "
      f"mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, "
      f"timm {timm.__version__}")
EOF
stamp_inputs | sha256sum | cut -d' ' -f1 > "$VENV/.mmeff-stamp"
log "environment ready in $(( $(date +%s) - t_start )) s"
