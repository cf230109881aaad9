#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment with the whole OpenMMLab stack.
#
#   tools/setup_env.sh               install / refresh the environment
#   tools/setup_env.sh --print-plan  print how mmcv would be built, or which cached wheel it uses
#                                    (KEY=VALUE lines); installs nothing; needs torch in the venv
#   tools/setup_env.sh --check       run only the final stack check against the venv
#
# Idempotent: a stamp of the requirement files and of the mmcv build plan is stored in the venv,
# so a second run that finds nothing changed returns within seconds. The slow part, mmcv 2.1.0
# built from source with its compiled ops, is cached as a wheel OUTSIDE the repo under a key made
# of the torch version (which includes its CUDA tag), the Python tag and the kind of ops inside:
#   $MMEFF_CACHE/wheels/mmcv-2.1.0-torch-<torch>-<cpXY>-cpu
#   $MMEFF_CACHE/wheels/mmcv-2.1.0-torch-<torch>-<cpXY>-cuda<arch list, e.g. 8.0_9.0+PTX>
# so a re-install never rebuilds it, a wheel built against another torch is never picked up (pip's
# own wheel cache does not key on torch), and a CPU-only wheel built on a login node is never
# reused where CUDA ops are wanted.
#
# CUDA ops: mmcv is built with them whenever nvcc is found (CUDA_HOME/bin/nvcc, else nvcc on PATH)
# and torch is a CUDA build, for the archs in TORCH_CUDA_ARCH_LIST, else those of the visible GPUs
# (nvidia-smi --query-gpu=compute_cap), else a default that covers current GPUs for the found nvcc
# (see default_arch_list). Without nvcc the ops are CPU-only.
#
# Environment:
#   MMEFF_VENV            venv location (default: .venv in the repo)
#   MMEFF_CACHE           cache root (default: ~/.cache/mmeff)
#   MMEFF_PYTHON          interpreter used to create the venv (default: python3)
#   MMEFF_MMCV_CUDA       auto (default): CUDA ops when nvcc is found; 1: CUDA ops or fail;
#                         0: CPU-only ops even when nvcc is found
#   TORCH_CUDA_ARCH_LIST  compute capabilities to compile for, e.g. "8.0;9.0" (a venv shared by
#                         nodes with different GPUs needs all of theirs)
#   CUDA_HOME             CUDA toolkit to build with (default: the one nvcc on PATH belongs to)
#   MAX_JOBS              parallel compile jobs for mmcv (default: number of cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMEFF_VENV:-$ROOT/.venv}"
CACHE="${MMEFF_CACHE:-$HOME/.cache/mmeff}"
PYTHON="${MMEFF_PYTHON:-python3}"
MMCV_VERSION=2.1.0
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

MODE=install
case "${1:-}" in
  '') ;;
  --print-plan) MODE=plan ;;
  --check) MODE=check ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--print-plan | --check | --help]" >&2; exit 2 ;;
esac

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
t_start=$(date +%s)

# ---------------------------------------------------------------------------------------------
# The mmcv build plan: CPU or CUDA ops, which archs, which cache key. compute_plan sets the PLAN_*
# globals, or PLAN_ERROR and returns 1. It only reads: the venv's torch (without importing it),
# nvcc and nvidia-smi.

# Default compute capabilities when no GPU is visible (e.g. a login node), by nvcc release:
# Volta/Turing/Ampere/Ada/Hopper(/Blackwell) as SASS, plus PTX of the newest for later GPUs.
default_arch_list() {
  local major="${1%%.*}" minor="${1#*.}"
  if (( major >= 13 )); then echo '7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX'   # CUDA 13 dropped sm_70
  elif (( major == 12 && minor >= 8 )); then echo '7.0;7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX'
  elif (( major == 12 || (major == 11 && minor >= 8) )); then echo '7.0;7.5;8.0;8.6;8.9;9.0+PTX'
  else echo '7.0;7.5;8.0;8.6+PTX'
  fi
}

# "9.0 8.0;8.0,8.6" -> "8.0;8.6;9.0": separators ; , or blanks, sorted, duplicates dropped.
normalize_arch_list() {
  tr ',; \t' '\n\n\n\n' <<<"$1" | sed '/^$/d' | sort -u -V | paste -sd';' -
}

# Sets PLAN_ARCH_LIST ("8.0;9.0+PTX") and PLAN_ARCH_SOURCE from the visible GPUs; empty if none.
visible_gpu_archs() {
  local caps=''
  if command -v nvidia-smi >/dev/null 2>&1; then
    caps="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null |
            tr -d ' \r' | grep -E '^[0-9]+\.[0-9]+$' || true)"
    [[ -n "$caps" ]] && PLAN_ARCH_SOURCE=nvidia-smi
  fi
  if [[ -z "$caps" ]]; then  # no nvidia-smi (or a driver too old for compute_cap): ask torch
    caps="$("$PY" -c 'import torch
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        print("%d.%d" % torch.cuda.get_device_capability(i))' 2>/dev/null || true)"
    [[ -n "$caps" ]] && PLAN_ARCH_SOURCE=torch
  fi
  # PTX of the newest arch as well, as torch does for visible cards: newer GPUs can JIT it.
  if [[ -n "$caps" ]]; then PLAN_ARCH_LIST="$(normalize_arch_list "$caps")+PTX"; fi
  return 0
}

# The toolkit torch's build will use: CUDA_HOME (or CUDA_PATH), else the one nvcc on PATH is in.
find_nvcc() {
  PLAN_NVCC='' PLAN_CUDA_HOME='' PLAN_NVCC_VERSION=''
  local home="${CUDA_HOME:-${CUDA_PATH:-}}" nvcc here
  if [[ -n "$home" ]]; then
    [[ -x "$home/bin/nvcc" ]] || { PLAN_NOTE="CUDA_HOME=$home has no bin/nvcc"; return 0; }
    nvcc="$home/bin/nvcc"
  else
    nvcc="$(command -v nvcc 2>/dev/null)" || return 0
    home="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"
    if [[ ! -f "$home/include/cuda_runtime.h" ]]; then
      # nvcc on PATH may be a wrapper script (e.g. /usr/local/bin/nvcc): nvcc knows where it is.
      here="$("$nvcc" --dryrun -v -c mmeff-probe.cu 2>&1 |
              sed -n 's/^#\$ _HERE_=//p' | head -1 || true)"
      if [[ -n "$here" && -x "$here/nvcc" ]]; then home="$(cd "$here/.." && pwd)"; fi
    fi
  fi
  PLAN_NVCC="$nvcc" PLAN_CUDA_HOME="$home"
  PLAN_NVCC_VERSION="$("$nvcc" --version 2>/dev/null |
    sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -1 || true)"
}

compute_plan() {
  PLAN_ERROR='' PLAN_NOTE='' PLAN_ARCH_LIST='' PLAN_ARCH_SOURCE='' PLAN_BUILD_ENV=()
  local mode="${MMEFF_MMCV_CUDA:-auto}" info
  # torch's version (with its CUDA tag), its CUDA release and the Python tag, without importing
  # torch (a second run must stay fast): torch/version.py is plain assignments.
  info="$("$PY" - 2>/dev/null <<'EOF'
import importlib.util, os, sys
spec = importlib.util.find_spec('torch')
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
ns = {}
path = os.path.join(list(spec.submodule_search_locations)[0], 'version.py')
exec(compile(open(path).read(), path, 'exec'), ns)
print(ns['__version__'], ns.get('cuda') or 'none', 'cp%d%d' % sys.version_info[:2])
EOF
)" || { PLAN_ERROR="no torch in $VENV (the plan depends on the installed torch)"; return 1; }
  read -r PLAN_TORCH_VERSION PLAN_TORCH_CUDA PLAN_PY_TAG <<<"$info"
  find_nvcc

  case "$mode" in
    0) PLAN_OPS=cpu PLAN_REASON='MMEFF_MMCV_CUDA=0' ;;
    1|auto)
      if [[ -z "$PLAN_NVCC" ]]; then
        PLAN_OPS=cpu
        PLAN_REASON="no nvcc (neither CUDA_HOME/bin/nvcc nor nvcc on PATH)"
        PLAN_REASON+="${PLAN_NOTE:+: $PLAN_NOTE}"
        if [[ "$mode" == 1 ]]; then
          PLAN_ERROR="MMEFF_MMCV_CUDA=1 but $PLAN_REASON:"
          PLAN_ERROR+=" put the CUDA toolkit's bin on PATH or set CUDA_HOME"
          return 1
        fi
      elif [[ "$PLAN_TORCH_CUDA" == none ]]; then
        PLAN_OPS=cpu
        PLAN_REASON="torch $PLAN_TORCH_VERSION is a CPU-only build (nvcc $PLAN_NVCC_VERSION unused)"
        if [[ "$mode" == 1 ]]; then
          PLAN_ERROR="MMEFF_MMCV_CUDA=1 but $PLAN_REASON; CUDA ops need a CUDA build of torch"
          return 1
        fi
      elif [[ "${PLAN_NVCC_VERSION%%.*}" != "${PLAN_TORCH_CUDA%%.*}" ]]; then
        PLAN_ERROR="nvcc ${PLAN_NVCC_VERSION:-of unknown version} ($PLAN_NVCC) does not match"
        PLAN_ERROR+=" torch $PLAN_TORCH_VERSION's CUDA $PLAN_TORCH_CUDA (torch refuses to build"
        PLAN_ERROR+=" extensions across CUDA major versions): point CUDA_HOME at a CUDA"
        PLAN_ERROR+=" ${PLAN_TORCH_CUDA%%.*}.x toolkit, or set MMEFF_MMCV_CUDA=0 for CPU-only ops"
        return 1
      else
        PLAN_OPS=cuda
        PLAN_REASON="nvcc $PLAN_NVCC_VERSION found and torch is built with CUDA $PLAN_TORCH_CUDA"
      fi ;;
    *) PLAN_ERROR="MMEFF_MMCV_CUDA must be auto, 1 or 0 (got '$mode')"; return 1 ;;
  esac

  if [[ "$PLAN_OPS" == cuda ]]; then
    if [[ -n "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
      PLAN_ARCH_LIST="$(normalize_arch_list "$TORCH_CUDA_ARCH_LIST")"
      PLAN_ARCH_SOURCE=TORCH_CUDA_ARCH_LIST
    else
      visible_gpu_archs
      if [[ -z "$PLAN_ARCH_LIST" ]]; then
        PLAN_ARCH_LIST="$(default_arch_list "$PLAN_NVCC_VERSION")"
        PLAN_ARCH_SOURCE="default for CUDA $PLAN_NVCC_VERSION (no GPU visible)"
      fi
    fi
    PLAN_KEY_SUFFIX="cuda$(tr ';' '_' <<<"$PLAN_ARCH_LIST" | tr -c 'A-Za-z0-9._+\n' '_')"
    PLAN_BUILD_ENV=(MMCV_WITH_OPS=1 FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=$PLAN_ARCH_LIST"
                    "CUDA_HOME=$PLAN_CUDA_HOME")
  else
    PLAN_KEY_SUFFIX=cpu
    # mmcv's setup.py compiles CUDA ops whenever torch sees a GPU: hide them for a CPU build.
    PLAN_BUILD_ENV=(MMCV_WITH_OPS=1 FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)
  fi
  local base="mmcv-$MMCV_VERSION-torch-$PLAN_TORCH_VERSION-$PLAN_PY_TAG"
  PLAN_WHEEL_KEY="$base-$PLAN_KEY_SUFFIX"
  PLAN_WHEEL_DIR="$CACHE/wheels/$PLAN_WHEEL_KEY"
  # Before the key recorded the ops, it was $base alone; what was built there had CUDA ops only if
  # a GPU was visible during the build, so such a wheel is reused only after looking inside it.
  PLAN_LEGACY_WHEEL_DIR="$CACHE/wheels/$base"
}

# cpu, cuda or none (no compiled ops at all): looks for device code in the wheel's mmcv/_ext*.so.
wheel_ops() {
  "$PY" - "$1" <<'EOF'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    exts = [n for n in zf.namelist() if re.fullmatch(r'mmcv/_ext[^/]*\.(so|pyd)', n)]
    if not exts:
        print('none')
        sys.exit(0)
    data = zf.read(exts[0])
markers = (b'.nv_fatbin', b'__cudaRegisterFatBinary', b'__nv_relfatbin')
print('cuda' if any(m in data for m in markers) else 'cpu')
EOF
}

# Sets PLAN_WHEEL and PLAN_WHEEL_SOURCE: cache (under the plan's key), legacy (a CPU-only wheel
# under the old key, copied to the new one before use) or build.
find_cached_wheel() {
  local found
  PLAN_WHEEL='' PLAN_WHEEL_SOURCE=build
  found="$(ls "$PLAN_WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -1 || true)"
  if [[ -n "$found" ]]; then
    PLAN_WHEEL="$found" PLAN_WHEEL_SOURCE=cache
  elif [[ "$PLAN_OPS" == cpu ]]; then
    found="$(ls "$PLAN_LEGACY_WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -1 || true)"
    if [[ -n "$found" && "$(wheel_ops "$found")" == cpu ]]; then
      PLAN_WHEEL="$found" PLAN_WHEEL_SOURCE=legacy
    fi
  fi
  return 0
}

print_plan() {
  printf '%s=%s\n' \
    MMCV_OPS "$PLAN_OPS" REASON "$PLAN_REASON" \
    TORCH_VERSION "$PLAN_TORCH_VERSION" TORCH_CUDA "$PLAN_TORCH_CUDA" PY_TAG "$PLAN_PY_TAG" \
    NVCC "$PLAN_NVCC" NVCC_VERSION "$PLAN_NVCC_VERSION" CUDA_HOME "$PLAN_CUDA_HOME" \
    ARCH_LIST "$PLAN_ARCH_LIST" ARCH_SOURCE "$PLAN_ARCH_SOURCE" \
    WHEEL_KEY "$PLAN_WHEEL_KEY" WHEEL_DIR "$PLAN_WHEEL_DIR" \
    WHEEL_SOURCE "$PLAN_WHEEL_SOURCE" WHEEL "$PLAN_WHEEL" \
    BUILD_ENV "${PLAN_BUILD_ENV[*]}"
}

# ---------------------------------------------------------------------------------------------
# The stack check: imports, then RoIAlign and nms on CPU, and on CUDA when a GPU is visible.
# MMEFF_EXPECT_OPS=cuda (set after a CUDA build) also fails a wheel without CUDA ops.
check_stack() {
  MMEFF_EXPECT_OPS="${1:-}" "$PY" - <<'EOF'
import os, sys

def fail(msg):
    print(f'[setup] STACK CHECK FAILED: {msg}', file=sys.stderr)
    sys.exit(1)

import torch, torchvision, mmcv, mmengine, timm
print(f'  torch {torch.__version__} (CUDA {torch.version.cuda}), '
      f'torchvision {torchvision.__version__}, mmcv {mmcv.__version__}, '
      f'mmengine {mmengine.__version__}, timm {timm.__version__}')
where = os.path.dirname(mmcv.__file__)
try:
    from mmcv.ops import RoIAlign, get_compiling_cuda_version, nms
except ImportError as err:  # mmcv-lite, or ops built against another torch
    fail(f'mmcv {mmcv.__version__} at {where} has no usable compiled ops ({err})')
compiled = get_compiling_cuda_version()
cuda_ops = 'not available' not in compiled


def run_ops(device):
    feats = torch.linspace(0, 1, 2 * 3 * 8 * 8, device=device).reshape(2, 3, 8, 8)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0], [1, 1.0, 1.0, 7.0, 6.0]], device=device)
    pooled = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)(feats, rois)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]],
                         dtype=torch.float32, device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    return pooled.cpu(), keep.cpu()


pooled, keep = run_ops('cpu')
if tuple(pooled.shape) != (2, 3, 2, 2) or keep.tolist() != [0, 2]:
    fail(f'mmcv ops give wrong results on CPU: RoIAlign {tuple(pooled.shape)}, '
         f'nms keeps {keep.tolist()}')
ops = f'CUDA {compiled}' if cuda_ops else 'CPU-only'
if os.environ.get('MMEFF_EXPECT_OPS') == 'cuda' and not cuda_ops:
    fail(f'mmcv at {where} was to be built with CUDA ops, but it has CPU-only ops')
if torch.cuda.is_available():
    gpu = (f'{torch.cuda.get_device_name(0)} (compute capability '
           '%d.%d)' % torch.cuda.get_device_capability(0))
    if not cuda_ops:
        msg = (f'a GPU is visible ({gpu}) but mmcv {mmcv.__version__} at {where} has CPU-only ops: '
               'RoIAlign/nms (and every detector) fail on CUDA tensors. Make nvcc of a CUDA '
               f'{torch.version.cuda} toolkit visible (PATH or CUDA_HOME) and run '
               'tools/setup_env.sh again; it then builds mmcv with CUDA ops under its own '
               'cache key')
        if os.environ.get('MMEFF_MMCV_CUDA') == '0':
            print(f'  WARNING (MMEFF_MMCV_CUDA=0): {msg}')
        else:
            fail(msg)
    else:
        try:
            g_pooled, g_keep = run_ops('cuda')
            torch.cuda.synchronize()
        except RuntimeError as err:
            fail(f'mmcv ops ({ops}) fail on {gpu}: {err}. If the message is about a missing kernel '
                 'image, the wheel was built for other GPUs: set TORCH_CUDA_ARCH_LIST to include '
                 'this one and run tools/setup_env.sh again')
        if g_keep.tolist() != keep.tolist() or not torch.allclose(g_pooled, pooled, atol=1e-5):
            fail(f'mmcv ops disagree between CPU and {gpu}')
        print(f'  mmcv ops ({ops}): RoIAlign and nms agree on CPU and on {gpu}')
else:
    print(f'  mmcv ops ({ops}): RoIAlign and nms run on CPU (no GPU visible, CUDA not exercised)')

import mmdet, mmseg
import mmdet.models, mmseg.models  # fails with mmcv-lite or a mismatched mmcv
print(f'  mmdet {mmdet.__version__}, mmseg {mmseg.__version__}')
EOF
}

# ---------------------------------------------------------------------------------------------
if [[ "$MODE" == check ]]; then
  [[ -x "$PY" ]] || die "no environment at $VENV"
  log "checking the stack in $VENV"
  check_stack
  exit 0
fi
if [[ "$MODE" == plan ]]; then
  [[ -x "$PY" ]] || die "no environment at $VENV: --print-plan reports on an existing one" \
    "(its torch decides the plan); run tools/setup_env.sh first"
  compute_plan || die "$PLAN_ERROR"
  find_cached_wheel
  print_plan
  exit 0
fi

stamp_inputs() {
  cat "$ROOT"/requirements/*.txt "$ROOT/tools/setup_env.sh" "$ROOT/setup.py"
  "$PY" -c 'import sys; print(sys.version)'
  echo "mmcv wheel: $PLAN_WHEEL_KEY"
}

if [[ -x "$PY" && -f "$VENV/.mmeff-stamp" ]] && compute_plan &&
   [[ "$(stamp_inputs | sha256sum | cut -d' ' -f1)" == "$(cat "$VENV/.mmeff-stamp")" ]]; then
  log "environment $VENV is up to date (delete $VENV/.mmeff-stamp to force a re-install)"
  exit 0
fi

if [[ ! -x "$PY" ]]; then
  log "creating virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$PY" -m pip install --quiet)

log "installing torch + torchvision (requirements/torch.txt; the first time this is ~5 GB)"
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -r "$ROOT/requirements/torch.txt" -r "$ROOT/requirements/build.txt"

compute_plan || die "$PLAN_ERROR"
find_cached_wheel
# Pin what is installed now so that nothing later in this script can swap torch under mmcv.
CONSTRAINTS="$VENV/.mmeff-constraints.txt"
"$PY" -m pip freeze | grep -E '^(torch|torchvision|setuptools)==' > "$CONSTRAINTS"
log "torch $PLAN_TORCH_VERSION, python $PLAN_PY_TAG; mmcv ops: $PLAN_OPS ($PLAN_REASON)"
if [[ "$PLAN_OPS" == cuda ]]; then
  log "CUDA archs: $PLAN_ARCH_LIST ($PLAN_ARCH_SOURCE); toolkit $PLAN_CUDA_HOME"
fi
log "mmcv wheel cache: $PLAN_WHEEL_DIR"

case "$PLAN_WHEEL_SOURCE" in
  cache) log "using cached mmcv wheel $PLAN_WHEEL" ;;
  legacy)
    mkdir -p "$PLAN_WHEEL_DIR"
    cp "$PLAN_WHEEL" "$PLAN_WHEEL_DIR/"
    log "reusing the CPU-only mmcv wheel cached under the previous key: $PLAN_WHEEL (copied)"
    PLAN_WHEEL="$PLAN_WHEEL_DIR/$(basename "$PLAN_WHEEL")" ;;
  build)
    log "no cached mmcv wheel for this torch and ops:" \
      "building mmcv $MMCV_VERSION with $PLAN_OPS ops from source"
    if [[ "$PLAN_OPS" == cuda ]]; then
      log "(with CUDA ops this takes far longer than the 10-15 CPU minutes on 2 cores, growing with"
      log " the number of archs; it happens once per torch/python/arch list)"
    else
      log "(about 10-15 minutes on 2 cores; it happens once per torch/python pair)"
    fi
    build="$(mktemp -d)"
    trap 'rm -rf "$build"' EXIT
    "$PY" -m pip download --quiet --no-deps --no-binary=:all: --no-build-isolation \
      -d "$build" "mmcv==$MMCV_VERSION"
    tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes older standards (also for nvcc).
    sed -i -E 's/-std=c\+\+(14|17)/-std=c++20/g' "$src/setup.py"
    grep -q -- '-std=c++20' "$src/setup.py" || die "C++20 patch did not apply"
    t_build=$(date +%s)
    # No build isolation: an isolated build has no torch and silently skips the ops.
    env "${PLAN_BUILD_ENV[@]}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$PY" -m pip wheel --no-build-isolation --no-deps --no-cache-dir -w "$build/dist" "$src" \
      > "$build/build.log" 2>&1 || { tail -50 "$build/build.log"; die "mmcv build failed"; }
    built="$(ls "$build"/dist/mmcv-*.whl)"
    got="$(wheel_ops "$built")"
    if [[ "$got" != "$PLAN_OPS" ]]; then
      tail -50 "$build/build.log"
      die "the mmcv build was to have $PLAN_OPS ops but has $got ops; not caching it"
    fi
    mkdir -p "$PLAN_WHEEL_DIR"
    cp "$built" "$PLAN_WHEEL_DIR/"
    log "mmcv built in $(( $(date +%s) - t_build )) s and cached in $PLAN_WHEEL_DIR"
    PLAN_WHEEL="$PLAN_WHEEL_DIR/$(basename "$built")" ;;
esac

log "installing mmcv, mmengine, mmdet, mmsegmentation, timm, export and test tools"
"${PIP[@]}" -c "$CONSTRAINTS" "$PLAN_WHEEL" -r "$ROOT/requirements/runtime.txt" \
  -r "$ROOT/requirements/export.txt" -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" -c "$CONSTRAINTS" --no-deps --no-build-isolation -e "$ROOT"

log "checking the stack"
check_stack "$PLAN_OPS"
stamp_inputs | sha256sum | cut -d' ' -f1 > "$VENV/.mmeff-stamp"
log "environment ready in $(( $(date +%s) - t_start )) s"
