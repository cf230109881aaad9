#!/usr/bin/env bash
# Download the pure-Python wheels that tools/gpu_check.py needs on the GPU machine and print the
# device command line that installs them and runs the check (see docs/gpu.md).
#
#   bash tools/gpu_check_bundle.sh            # wheels into .whl/gpu_check/ (git-ignored)
#
# The GPU machine has Python 3.12, torch, torchvision, timm, numpy, pyyaml, rich, matplotlib and
# opencv, but no mmengine and no package index. mmeff's models import mmengine (BaseModule,
# the registry, the logger), and mmengine imports addict, termcolor and yapf (yapf needs
# platformdirs; tomli only before Python 3.11). mmcv, mmdet and mmseg are neither needed nor
# carried: gpu_check blocks them. Variables: PYTHON (the pip to use), GPU_WHEELS (folder).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DEST=${GPU_WHEELS:-.whl/gpu_check}
PACKAGES=(mmengine==0.10.7 addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.8)

rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation py --platform any -d "$DEST" "${PACKAGES[@]}"

status=0
for whl in "$DEST"/*.whl; do
  case "$whl" in
    *-none-any.whl) ;;
    *) echo "error: $whl is not a pure-Python wheel" >&2; status=1 ;;
  esac
done
if ! git check-ignore -q "$DEST/x.whl"; then
  echo "error: $DEST is not git-ignored (the carry must be an ignored path)" >&2
  status=1
fi
kib=$(du -sk "$DEST" | cut -f1)
if [ "$kib" -ge $((64 * 1024)) ]; then
  echo "error: $DEST holds ${kib} KiB, over the 64 MiB a device call may carry" >&2
  status=1
fi
[ "$status" -eq 0 ] || exit "$status"

echo "wheels in $DEST (${kib} KiB):"
ls -1 "$DEST"
echo
echo "mmengine's declared requirements (the ones not carried are on the GPU machine, or unused"
echo "by the modules mmeff imports: opencv/matplotlib are imported only by mmengine's"
echo "visualisation):"
"$PY" - "$DEST" <<'EOF'
import glob, sys, zipfile
whl = glob.glob(f'{sys.argv[1]}/mmengine-*.whl')[0]
with zipfile.ZipFile(whl) as z:
    meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    for line in z.read(meta).decode().splitlines():
        if line.startswith('Requires-Dist:') and 'extra ==' not in line:
            print('  ' + line.split(':', 1)[1].strip())
EOF
echo
echo "device command (run from the repository root, carry [\"$DEST\"], timeout_s 600):"
echo "set -o pipefail; mkdir -p \$OUT/gpu_check && python3 -m pip install -q --no-index" \
  "--no-deps --no-compile" \
  "--no-cache-dir --upgrade --target /tmp/site $DEST/*.whl && export" \
  "PYTHONPATH=/tmp/site:\$PWD PYTHONUNBUFFERED=1 && python3 tools/gpu_check.py --device cuda" \
  "--out \$OUT/gpu_check 2>&1 | tee \$OUT/gpu_check/run.log"
