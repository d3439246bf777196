#!/usr/bin/env bash
# The wheel folder bench/gpu_check.sh installs trainhub from, on a GPU machine with no package index:
# trainhub's own wheel and its runtime dependencies for Python 3.12 on manylinux x86_64, NOT torch
# (the GPU machine has torch with CUDA; the check's venv sees it with --system-site-packages).
# It must stay under 60 MB: prints the size and fails when over. With every dependency it is about
# 75 MB, so the TensorBoard stack is left out too: the GPU machine has tensorboard (TESTBED.md), and
# with it numpy, grpcio and pillow, which the venv sees as installed (gpu_check.sh checks first).
#
# Usage: bench/gpu_wheels.sh [FOLDER]    (default bench/gpu-wheels; emptied first)
# Env:   PYTHON (default .venv/bin/python, any Python with pip), TARGET_PYTHON (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/gpu-wheels}"
python="${PYTHON:-.venv/bin/python}"
target="${TARGET_PYTHON:-3.12}"
limit_mb=60
# Wheels the target machine has already (its tensorboard and what tensorboard needs).
on_target="${ON_TARGET-tensorboard tensorboard_data_server numpy grpcio pillow}"

rm -rf "$out"
mkdir -p "$out"
# trainhub itself: its dependencies come next, for the target's Python and platform.
"$python" -m pip wheel --no-deps --quiet --wheel-dir "$out" .
wheel="$(ls "$out"/trainhub-*.whl)"
# manylinux_2_28 covers the wheels built on newer glibc (every GPU box of the last years has it);
# pip also takes the older tags (manylinux2014 and below) under it.
"$python" -m pip download --quiet --dest "$out" --only-binary=:all: \
    --python-version "$target" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    "$wheel"
for name in $on_target; do
    rm -f "$out/$name"-[0-9]*.whl
done
if ls "$out" | grep -qi '^torch-'; then
    echo "gpu_wheels: torch got into $out (a dependency asks for it): it must not" >&2
    exit 1
fi
bytes=$(du -sb "$out" | cut -f1)
count=$(ls "$out" | wc -l)
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "gpu_wheels: $count wheels for Python $target in $out: $mb MB (limit $limit_mb MB;" \
    "left out, on the target already: $on_target)"
if [ "$bytes" -gt $((limit_mb * 1048576)) ]; then
    echo "gpu_wheels: over the limit of $limit_mb MB; largest:" >&2
    ls -S -l "$out" | head -6 >&2
    exit 1
fi
