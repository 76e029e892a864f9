#!/usr/bin/env bash
# The H200 half of the estimator campaign on a 2 x H200 host: two measure_vllm.py streams, one per GPU,
# each starting vLLM for its cases in turn (results under $OUT/gpu0, $OUT/gpu1).
# usage: bash benchmarks/gpu/h200_campaign.sh "CASES FOR GPU 0" "CASES FOR GPU 1" [SECONDS]
set -u
OUT=${OUT:-/tmp/out}
export PYTHONPATH=/root/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ALLREDUCE_USE_SYMM_MEM=0 NCCL_NVLS_ENABLE=0 \
       CUDA_DEVICE_ORDER=PCI_BUS_ID CASE_S=${CASE_S:-200} VLLM_USE_DEEP_GEMM=0
T=${3:-560}
for g in 0 1; do
  cases=$([ $g = 0 ] && echo "$1" || echo "$2")
  [ -n "$cases" ] || continue
  mkdir -p $OUT/gpu$g
  OUT=$OUT/gpu$g MODELS_DIR=/root/models/gpu$g CUDA_VISIBLE_DEVICES=$g \
    timeout $T python3 benchmarks/gpu/measure_vllm.py benchmarks/gpu/cases-h200-campaign.json $cases \
    > $OUT/gpu$g/stream.log 2>&1 &
done
wait
for g in 0 1; do [ -f $OUT/gpu$g/results.jsonl ] && python3 -c "
import json
for l in open('$OUT/gpu$g/results.jsonl'):
    r = json.loads(l); print('gpu$g', r['case'], 'ready', r.get('ready'), r.get('ready_s'), 'w', r.get('weights_gib'), 'kv', r.get('kv_tokens'), 'enc', r.get('encoder_budget'), r.get('encoder_profile'), 'blk', r.get('attn_block'), r.get('mamba_mode'), 'err', (r.get('error') or '')[:300])"; done
