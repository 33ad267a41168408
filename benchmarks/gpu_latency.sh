#!/usr/bin/env bash
# The GPU latency figures of docs/BENCHMARKS.md, in one go, on a machine with a CUDA GPU,
# onnxruntime-gpu and a CUDA build of torch (the peers run in the same process and run):
#   benchmarks/gpu_latency.sh [OUT_DIR]     (RUNS=50 PERSONS=10 SIZE=1500x900 by default)
# Each configuration writes OUT_DIR/<name>.json; a configuration that fails (e.g. TensorRT or
# CUDA graphs unavailable) is reported and skipped, the others still run.
set -uo pipefail
out=${1:-gpu-latency}
runs=${RUNS:-50}
persons=${PERSONS:-10}
size=${SIZE:-1500x900}
work=${WORKDIR:-$out/exports}
python=${PYTHON:-python}
mkdir -p "$out" "$work"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"

bench() {  # name, then extra arguments
  local name=$1
  shift
  echo "== $name"
  if "$python" -m benchmarks.latency --config r50 --device cuda --size "$size" \
    --persons "$persons" --runs "$runs" --warmup 5 --workdir "$work" --json "$@" \
    >"$out/$name.json" 2>"$out/$name.log"; then
    "$python" -c 'import json,sys; r=json.load(open(sys.argv[1])); [print(x) for x in r["rows"]]; print(r["ratios"])' "$out/$name.json"
  else
    echo "FAILED (see $out/$name.log)"; tail -3 "$out/$name.log"
  fi
}

for batch in 1 8; do
  bench "cuda-fp32-b$batch" --providers cuda --batch "$batch" --io-binding
  bench "cuda-fp16-b$batch" --providers cuda --batch "$batch" --io-binding --fp16
  bench "tensorrt-fp16-b$batch" --providers tensorrt,cuda --batch "$batch" --fp16 \
    --models ours-ort,frcnn
done
# CUDA graphs need static shapes; our graph's NMS/NonZero outputs are data-dependent, so this
# is expected to fail, and says why.
bench "cuda-graph-fp32-b1" --providers cuda --batch 1 --io-binding --cuda-graph \
  --models ours-ort,frcnn
