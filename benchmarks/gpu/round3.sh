#!/usr/bin/env bash
# One H100/H200 round with vLLM 0.26.0 staged under /root/site (shared/gpu/README.md), results as $OUT/round3-PART.tgz:
#  A  EXAONE-4.0-32B at 64k and Llama-3.1-8B with an EAGLE-3 head (cases-h100-round3.json; blind plans committed
#     in benchmarks/results/h100-round3-blind/ before the starts)
#  B  24 GB cards emulated (small_cards.py): Llama-3.1-8B at 8k, the L4's default share and larger ones, an RTX 4090's
#  C  two 8B models placed by the plan behind `launcher serve` (gateway_plan.py), then vLLM's first sleep (first_sleep.py)
#  D  the gateway's own cost on the GPU host's CPUs, against the stand-in model server (gateway_levers.py; no GPU used)
# usage: bash benchmarks/gpu/round3.sh A|B|C|D
set -u
OUT=${OUT:-/tmp/out}; W=/root/round3-$1; mkdir -p $W
export PYTHONPATH=/root/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_USE_DEEP_GEMM=0 PYTHONUNBUFFERED=1 MODELS_DIR=/root/models
python3 -c "import pycountry" 2>/dev/null || export PYTHONPATH=$PYTHONPATH:$PWD/benchmarks/gpu/stubs
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader | tee $W/gpu.txt
M=/root/models/l8
[ -d $M ] || [ "$1" = D ] || python3 benchmarks/gpu/make_dummy_model.py llama-3.1-instruct 8 $M > /dev/null
case "$1" in
  A) OUT=$W CASE_S=${CASE_S:-260} timeout ${A_S:-520} python3 benchmarks/gpu/measure_vllm.py benchmarks/gpu/cases-h100-round3.json \
       ${CASES:-exaone4_32b_64k_v026 eagle3_llama31_8b_32k_v026} > $W/stream.log 2>&1
     grep -h '"case"' $W/results.jsonl | cut -c1-600 ;;
  B) OUT=$W CASE_S=200 timeout ${B_S:-540} python3 benchmarks/gpu/small_cards.py $M ${STARTS:-L4:20.57 L4:21.0 L4:21.3 RTX4090:22.07} 2>&1 | tail -8 ;;
  D) timeout ${D_S:-300} python3 benchmarks/gateway_levers.py --rounds ${ROUNDS:-3} --requests 300 \
       --markdown $W/levers.md 2>&1 | tail -12 ;;
  C) timeout ${C_S:-400} python3 benchmarks/gpu/gateway_plan.py $W/plan 2>&1 | tail -c 3000
     OUT=$W timeout 150 python3 benchmarks/gpu/first_sleep.py $M 2>&1 | tail -3 ;;
esac
rm -rf $W/plan/home/runs/*/compile 2>/dev/null
tar czf $OUT/round3-$1.tgz -C $W . && ls -la $OUT
