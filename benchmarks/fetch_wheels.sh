#!/usr/bin/env bash
# Wheels of what wsiseg needs beyond torch, numpy, scipy, pillow and tifffile, for a CUDA
# machine with Python 3.12 that has those but cannot download: OpenSlide and zarr with their
# needs, at the versions installed here. They go to .whl/ (git ignores it, about 13 MB);
# benchmarks/gpu_check.sh installs them there.
#
#   benchmarks/fetch_wheels.sh [PYTHON_VERSION]      (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
packages=(openslide-python openslide-bin zarr numcodecs donfig google-crc32c)
mkdir -p .whl
for name in "${packages[@]}"; do
  version=$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$name==$version"
done
du -sh .whl
