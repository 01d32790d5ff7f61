#!/usr/bin/env bash
# The device check (benchmarks/gpu_check.py) on a machine whose python3 has torch but not the
# rest of what wsiseg needs: installs the wheels in .whl/ (benchmarks/fetch_wheels.sh) and
# wsiseg itself into a temporary folder, without any download, then runs the check.
#
#   benchmarks/gpu_check.sh                        (CUDA: 40000 x 30000 slide, batch 32/64/128)
#   benchmarks/gpu_check.sh --device cpu --quick   (anywhere, in under a minute)
# PYTHON names the interpreter (default python3).
set -euo pipefail
python=${PYTHON:-python3}
cd "$(dirname "$0")/.."
site=$(mktemp -d "${TMPDIR:-/tmp}/wsiseg-site.XXXXXX")
trap 'rm -rf "$site"' EXIT
pip_install() {
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --target "$site" "$@"
}
if ! "$python" -c "import openslide, zarr" 2> /dev/null; then
  compgen -G ".whl/*.whl" > /dev/null || { echo "gpu_check.sh: openslide or zarr is missing and .whl/ holds no wheels; run benchmarks/fetch_wheels.sh where pip can download" >&2; exit 1; }
  pip_install .whl/*.whl
fi
pip_install --no-build-isolation .
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$python" benchmarks/gpu_check.py "$@"
