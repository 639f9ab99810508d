#!/usr/bin/env bash
# The recorded runs in benchmarks/results/ (about 40 minutes on an idle 2-core machine).
# Run from the repository root with the project's virtual environment active.
set -euo pipefail
export PYTHONPATH=src
OUT=${OUT:-benchmarks/results}
uptime
# 1. side by side with transformers: fp32, CPU, 2 threads, batch 8 inference / batch 4 training step
python benchmarks/speed.py --compare --threads 2 --batch-size 8 --train-batch-size 4 --device cpu \
    --warmup 2 --iters 2 --repeats 10 --out "$OUT"
uptime
# 1b. the inference comparison twice more, and once with the packed-weights mode; then pool the rounds
for i in 2 3; do
    python benchmarks/speed.py --compare --threads 2 --batch-size 8 --task infer --device cpu \
        --warmup 2 --iters 2 --repeats 10 --no-memory --out "$OUT/reruns/run$i"
done
python benchmarks/speed.py --compare --mode eager,packed --threads 2 --batch-size 8 --task infer --device cpu \
    --warmup 2 --iters 2 --repeats 8 --out "$OUT/packed"
# 1c. the inference comparison under each glibc malloc preset (page faults per batch are in the tables)
for m in default pinned tuned; do
    python benchmarks/speed.py --compare --threads 2 --batch-size 8 --task infer --device cpu \
        --warmup 2 --iters 2 --repeats 10 --no-memory --malloc $m --out "$OUT/malloc/$m"
done
python benchmarks/pool.py "$OUT"/*_t2_b8_*.json "$OUT"/reruns/*/*.json "$OUT"/packed/*.json "$OUT"/malloc/default/*.json
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
