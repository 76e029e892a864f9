#!/usr/bin/env bash
# The gateway (`launcher serve`) on one GPU: switching by sleep and wake against cold starts, three 8B models at 32k
# in turn (benchmarks/gpu/gateway_switch.py), and the gateway's overhead with an 8B model
# (benchmarks/gateway_overhead.py). Results under $OUT/gw, packed as $OUT/gw-PART.tgz.
# usage: bash benchmarks/gpu/gateway_gpu.sh switch|overhead   (vLLM staged under /root/site)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/gw"
export PYTHONPATH=/root/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1 MODELS_DIR=/root/models
# vLLM 0.26.0's structured-output import reaches pycountry, which the bundle lacks (as in h200_check.sh)
python3 -c "import pycountry" 2>/dev/null || export PYTHONPATH=$PYTHONPATH:$PWD/benchmarks/gpu/stubs
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader | tee "$OUT/gw/gpu.txt"
python3 -c "import vllm, aiohttp, prometheus_client, yaml, psutil; print('vllm', vllm.__version__)" | tee "$OUT/gw/versions.txt"
case "$1" in
  switch)
    timeout "${SWITCH_S:-540}" python3 benchmarks/gpu/gateway_switch.py "$OUT/gw/switch" 2>&1 | tail -60
    ;;
  overhead)
    [ -d /root/models/gw_a ] || python3 benchmarks/gpu/make_dummy_model.py llama-3.1-instruct 8 /root/models/gw_a > /dev/null
    GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    timeout "${OVERHEAD_S:-540}" python3 benchmarks/gateway_overhead.py --rounds 3 --model-path /root/models/gw_a \
      --engine-args '{"max-model-len": 8192, "load-format": "dummy"}' --env '{}' \
      --label "one $GPU, vLLM $(cut -d' ' -f2 "$OUT/gw/versions.txt"), Llama-3.1-8B shapes with dummy weights" \
      --markdown "$OUT/gw/overhead.md" 2>&1 | tail -30
    ;;
esac
tar czf "$OUT/gw-$1.tgz" -C "$OUT" gw
