#!/usr/bin/env bash
# The recorded runs in benchmarks/results/ (about 40 minutes on an idle 2-core machine).
# Run from the repository root with the project's virtual environment active. OLD (optional): the src/ folder of
# another vitkit version to compare with in one process (e.g. a `git worktree add /tmp/vitkit-old <commit>`).
set -euo pipefail
export PYTHONPATH=src:.
OUT=${OUT:-benchmarks/results}
uptime
# 1. side by side with transformers: fp32, CPU, 2 threads, batch 8 inference / batch 4 training step
python benchmarks/speed.py --compare --threads 2 --batch-size 8 --train-batch-size 4 --device cpu \
    --warmup 2 --iters 2 --repeats 10 --out "$OUT/speed"
uptime
# 1b. this version against another one, in one process (the same logits; default and tuned allocator)
if [ -n "${OLD:-}" ]; then
    for m in vit_base_patch16_224 swin_tiny_patch4_window7_224 cvt_13_224; do
        for malloc in default tuned; do
            python benchmarks/versions_ab.py $m --other "$OLD" --batch-size 8 --rounds 20 --threads 2 --malloc $malloc
        done
    done
fi
uptime
# 1c. the native kernels per shape against PyTorch, and one engine swap in the whole model
python benchmarks/kernels.py --threads 2 --batch-size 8 --rounds 7 --out "$OUT"
python benchmarks/engine_ab.py swin_tiny_patch4_window7_224 micro_batch_bytes=0 --batch-size 8 --rounds 15 --threads 2
# 1d. the engine's training shortcuts against the plain training step; why CvT's strided projections train in fp32
python benchmarks/training_path.py vit_base_patch16_224 vit_small_patch16_224 swin_tiny_patch4_window7_224 \
    cvt_13_224 --batch-size 4 --rounds 6 --threads 2 --out "$OUT/training-path"
python benchmarks/depthwise_conv.py --batch-size 32 --threads 2 > "$OUT/depthwise_conv_cpu_t2_b32.md"
uptime
# 2. scaling with image size, 224 -> 1024 px
python benchmarks/scaling.py --threads 2 --budget 540 --max-seconds 40 --out "$OUT"
uptime
# 3. faster modes on ViT-B/16: bf16 autocast, torch.compile, ONNX Runtime, dynamic int8, the model in bf16
python benchmarks/speed.py --models vit_base_patch16_224 --mode optimized,reference,compile,onnx,int8,bf16-weights \
    --dtype fp32,bf16 --task infer --threads 2 --batch-size 8 --warmup 1 --iters 1 --repeats 5 --no-memory \
    --device cpu --out "$OUT/modes"
uptime
# 4. faster modes on Fashion-MNIST (accuracy cost and speed on a small model)
python benchmarks/modes.py --threads 2 --out "$OUT"
uptime
# 5. vitkit serve under load: batching on / off, overload, memory over 10,000 requests
python benchmarks/serve.py --threads 1 --clients 16 --seconds 20 --out "$OUT/serve"
uptime
