#!/usr/bin/env bash
# Build the wheel of pvc-core and of each plugin under plugins/ (or of the plugins named:
# build-wheels.sh OUTDIR [node vm ...]) into OUTDIR with `python -m build --wheel`.
#
# Each distribution is built from a clean copy of the tree (no build/ or *.egg-info): setuptools
# packs everything under build/lib, so a module removed since an earlier build would ship again.
# The copy keeps the layout, since every plugin's setup.py reads ../../pvc_core/version.py.
# PYTHON (default .venv/bin/python, made by `make install`) needs build, setuptools and wheel;
# --no-isolation uses them as they are, so no network is needed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out=${1:?usage: build-wheels.sh OUTDIR [plugin ...]}
shift
PYTHON=${PYTHON:-$here/.venv/bin/python}
mkdir -p "$out"
out="$(cd "$out" && pwd)"

plugins=("$@")
if [ "${#plugins[@]}" -eq 0 ]; then
  for setup in "$here"/plugins/*/setup.py; do plugins+=("$(basename "$(dirname "$setup")")"); done
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tar -C "$here" --exclude=build --exclude='*.egg-info' --exclude=__pycache__ -cf - setup.py pvc_core plugins \
  | tar -C "$stage" -xf -

for dist in . "${plugins[@]/#/plugins/}"; do
  [ -f "$stage/$dist/setup.py" ] || { echo "build-wheels: no distribution $dist" >&2; exit 1; }
  "$PYTHON" -m build --wheel --no-isolation --outdir "$out" "$stage/$dist" > "$stage/build.log" 2>&1 \
    || { cat "$stage/build.log" >&2; echo "build-wheels: $dist failed" >&2; exit 1; }
done
ls "$out"/*.whl
