#!/usr/bin/env bash
# The recorded runs in benchmarks/results/ (about an hour on an idle 2-core machine).
# Run from the repository root with the project's virtual environment active.
set -euo pipefail
export PYTHONPATH=src
OUT=${OUT:-benchmarks/results}
uptime
# 1. side by side with transformers: fp32, CPU, 2 threads, batch 8 inference / batch 4 training step
python benchmarks/speed.py --compare --threads 2 --batch-size 8 --train-batch-size 4 --device cpu \
    --warmup 2 --iters 2 --repeats 10 --out "$OUT"
uptime
# 1b. the inference comparison four more times; then pool the rounds of all five runs
for i in 2 3 4 5; do
    python benchmarks/speed.py --compare --threads 2 --batch-size 8 --task infer --device cpu \
        --warmup 2 --iters 2 --repeats 10 --no-memory --out "$OUT/reruns/run$i"
done
python benchmarks/pool.py "$OUT"/*_t2_b8_*.json "$OUT"/reruns/*/*.json
uptime
# 1c. the inference comparison under the other glibc malloc presets (page faults per batch are in the tables)
for m in tuned pinned; do
    python benchmarks/speed.py --compare --threads 2 --batch-size 8 --task infer --device cpu \
        --warmup 2 --iters 2 --repeats 10 --no-memory --malloc $m --out "$OUT/malloc/$m"
done
uptime
# 1d. the native kernels: per shape against PyTorch, and each on / off in the whole model
python benchmarks/kernels.py --threads 2 --batch-size 8 --rounds 7 --out "$OUT"
python benchmarks/switch_ab.py swin_tiny_patch4_window7_224 vitkit.kernels.window_attention NATIVE_WINDOW_ATTENTION \
    --on True --off False --batch-size 8 --rounds 10 --threads 2
for m in cvt_13_224 vit_base_patch16_224; do
    python benchmarks/switch_ab.py $m vitkit.kernels.attention NATIVE_ATTENTION --on True --off False \
        --batch-size 8 --rounds 10 --threads 2
done
uptime
# 2. scaling with image size, 224 -> 1024 px
python benchmarks/scaling.py --threads 2 --budget 540 --max-seconds 40 --out "$OUT"
uptime
# 3. faster modes on ViT-B/16: bf16 autocast, torch.compile, ONNX Runtime, dynamic int8, pre-packed weights
python benchmarks/speed.py --models vit_base_patch16_224 --mode eager,compile,onnx,int8,packed --dtype fp32,bf16 \
    --task infer --threads 2 --batch-size 8 --warmup 1 --iters 1 --repeats 5 --no-memory --device cpu --out "$OUT/modes"
uptime
# 4. faster modes on Fashion-MNIST (accuracy cost and speed on a small model)
python benchmarks/modes.py --threads 2 --out "$OUT"
uptime
