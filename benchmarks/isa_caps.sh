#!/usr/bin/env bash
# vitkit against transformers and timm on smaller CPUs, stood in for by this one with instruction-set caps:
#   avx512-core-bf16  AVX-512 with bf16 dot products, no AMX (the ISA of AMD Zen 4, Intel Ice Lake / Cooper Lake)
#   avx2              AVX2 only (AMD Zen 2 / 3, Intel client CPUs without AVX-512): oneDNN, PyTorch's vector
#                     kernels, MKL and vitkit's native kernels all built or dispatched for AVX2; fp32 only (bf16 is
#                     emulated there in every library)
# The caps change the code paths, not the machine: caches, clocks and the vector units stay this CPU's, so a ratio
# here says how the paths compare, not what a Zen 4 or Zen 3 would measure. Every result records the caps, and its
# file names end in -isa-<cap>.
#   CAPS      which caps to run (default: both)          RUNS  which runs (default: infer-b8 infer-b1 train-b4 train-b32)
#   OUT       results folder (default: benchmarks/results/speed-peers)
# Run from the repository root; the peers' environment comes from benchmarks/peers_env.sh (VITKIT_PEERS_VENV).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(bash benchmarks/peers_env.sh)/bin/python"
OUT=${OUT:-benchmarks/results/speed-peers}
ALL="vit_base_patch16_224 vit_small_patch16_224 swin_tiny_patch4_window7_224 cvt_13_224"
SMALL="vit_small_patch16_224 swin_tiny_patch4_window7_224 cvt_13_224"
declare -A ENV=(
    [avx512-core-bf16]="ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16"
    [avx2]="ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 VITKIT_KERNEL_ARCH=-march=x86-64-v3"
)
declare -A DTYPES=([avx512-core-bf16]=fp32,bf16 [avx2]=fp32)
declare -A ARGS=(
    [infer-b8]="--task infer --batch-size 8 --iters 2 --repeats 5"
    [infer-b1]="--task infer --batch-size 1 --iters 4 --repeats 5"
    [train-b4]="--task train --train-batch-size 4 --iters 2 --repeats 5"
    [train-b32]="--task train --train-batch-size 32 --iters 1 --repeats 3"
)
for run in ${RUNS:-infer-b8 infer-b1 train-b4 train-b32}; do
    for cap in ${CAPS:-avx512-core-bf16 avx2}; do
        models=$ALL
        [ "$run" = train-b32 ] && models=$SMALL  # ViT-B at batch 32 takes too long on 2 cores
        echo "== $cap $run, load $(cut -d' ' -f1-3 /proc/loadavg)"
        # shellcheck disable=SC2086  # the caps and arguments are word lists
        env ${ENV[$cap]} PYTHONPATH=src "$PY" benchmarks/speed.py --models $models --threads 2 --compare --no-memory \
            --dtype "${DTYPES[$cap]}" --mode optimized ${ARGS[$run]} --out "$OUT/isa-$cap/$run"
    done
done
