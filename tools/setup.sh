#!/usr/bin/env bash
# One-command environment: a virtualenv in .venv with torch (CPU), mmengine, mmcv, mmdet,
# openmim, seaborn (for `mim run mmdet analyze_logs`), the plugin (editable) and the dev tools.
#
#   bash tools/setup.sh [--wheels DIR]
#
# DIR (or $PLUGIN_WHEELS) is a folder of prebuilt wheels, e.g. ../shared/wheels holding
# mmcv-2.1.0 for cp311 + torch 2.13.0. Without a matching wheel, mmcv is built from source
# (about 30 minutes on 2 cores). A second run finds the stamp and changes nothing.
set -euo pipefail

wheels="${PLUGIN_WHEELS:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --wheels=*) wheels="${1#*=}"; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$1' (allowed: --wheels DIR)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
venv="$root/.venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

# Versions that work together here; README "Installation" lists them (keep both in step).
TORCH=torch==2.13.0
MMCV=mmcv==2.1.0
# seaborn: what `mim run mmdet analyze_logs plot_curve` draws with.
STACK=(mmengine==0.10.7 mmdet==3.3.0 pycocotools openmim seaborn)
SETUPTOOLS='setuptools>=77.0.3,<81'

stamp_inputs() { cat "$0" setup.cfg pyproject.toml; }
stamp="$venv/.plugin-setup-stamp"
if [ -f "$stamp" ] && [ "$(stamp_inputs | sha256sum)" = "$(cat "$stamp")" ] \
   && "$venv/bin/python" -c 'import mmdet, mmcv.ops, plugin' 2>/dev/null; then
  echo "setup: .venv is up to date (delete $stamp to force a reinstall)"
  exit 0
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"${pip[@]}" install -q --upgrade pip
"${pip[@]}" install -q "$SETUPTOOLS" wheel ninja "$TORCH"

find_links=()
if [ -n "$wheels" ]; then
  [ -d "$wheels" ] || { echo "setup: --wheels '$wheels' is not a folder" >&2; exit 2; }
  find_links=(--find-links "$(cd "$wheels" && pwd)")
fi
if ! "$venv/bin/python" -c 'import mmcv.ops' 2>/dev/null; then
  # The wheel from DIR is taken when it matches; otherwise pip builds the sdist against
  # the torch installed above (hence no build isolation).
  MMCV_WITH_OPS=1 "${pip[@]}" install --no-build-isolation "${find_links[@]}" "$MMCV"
fi

"${pip[@]}" install -q "${find_links[@]}" "${STACK[@]}" "$TORCH" "$MMCV"
# openmim -> openxlab pins setuptools~=60.2, but mmengine/openmim need pkg_resources and
# torch asks for >=77.0.3: pin it after them.
"${pip[@]}" install -q "$SETUPTOOLS"
"${pip[@]}" install -q --no-build-isolation -e ".[dev]"

"$venv/bin/python" -c 'import torch, mmcv.ops, mmdet, plugin; print("setup: torch", torch.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__)'
stamp_inputs | sha256sum > "$stamp"
