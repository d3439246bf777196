#!/usr/bin/env bash
# The GPU check, in one go, on a machine with NVIDIA GPUs, Python 3.12, torch with CUDA, no Docker and
# no package index: a venv with --system-site-packages (the machine's torch and tensorboard are seen),
# trainhub installed into it from the wheel folder bench/gpu_wheels.sh made (--no-index), then
# bench/gpu_check.py: `trainhub serve` with no engine, a PyTorch estimator (use_docker=False,
# use_gpu=True, Nccl(), one process per GPU) submitted with the SDK, beside a bare torchrun of the same
# script, interleaved; prints both throughputs and their ratio (goal >= 98% of direct).
#
# Usage: bench/gpu_check.sh [--cpu] [WHEELS]   (WHEELS default bench/gpu-wheels)
#   --cpu: the same submission with Gloo on two CPU processes (a machine without GPUs)
# Env: PYTHON (default python3.12), EXTRA_WHEELS (a second folder, e.g. torch's CPU wheel for --cpu),
#      REPS (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=()
if [ "${1:-}" = "--cpu" ]; then
    mode=(--cpu)
    shift
fi
wheels="$(realpath "${1:-bench/gpu-wheels}")"
python="${PYTHON:-python3.12}"
started=$(date +%s)

[ -d "$wheels" ] || { echo "gpu_check: no wheel folder at $wheels (make it with bench/gpu_wheels.sh)" >&2; exit 1; }
work="$(mktemp -d /tmp/trainhub-gpu-venv.XXXXXX)"
trap 'rm -rf "$work"' EXIT
"$python" -m venv --system-site-packages "$work/venv"
venv_python="$work/venv/bin/python"
# What the wheel folder leaves out (bench/gpu_wheels.sh): the machine's own.
if [ ${#mode[@]} -eq 0 ]; then
    "$venv_python" -c 'import torch, tensorboard, numpy' 2>/dev/null || {
        echo "gpu_check: $python lacks torch, tensorboard or numpy, which the wheel folder leaves out" >&2
        exit 1
    }
fi
links=(--find-links "$wheels")
extra=()
if [ -n "${EXTRA_WHEELS:-}" ]; then
    links+=(--find-links "$EXTRA_WHEELS")
fi
if [ ${#mode[@]} -ne 0 ] && ! "$venv_python" -c 'import torch' 2>/dev/null; then
    extra=(torch)  # --cpu on a machine without torch: from EXTRA_WHEELS
fi
PIP_CONFIG_FILE=/dev/null "$venv_python" -m pip install --quiet --no-index "${links[@]}" trainhub "${extra[@]}"
echo "gpu_check: trainhub $("$venv_python" -c 'import trainhub; print(trainhub.__version__)') installed" \
    "from $wheels in $(($(date +%s) - started)) s"
# From the venv's folder: the server (`python -m trainhub`) imports the installed trainhub, not this
# checkout's.
bench="$PWD/bench"
(cd "$work" && "$venv_python" "$bench/gpu_check.py" "${mode[@]}" --reps "${REPS:-3}")
echo "gpu_check: done in $(($(date +%s) - started)) s"
