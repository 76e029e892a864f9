#!/usr/bin/env bash
# Blind checks of the estimator on one H200 (estimates committed beforehand in benchmarks/results/h200-check-blind/):
# measure_vllm.py starts vLLM for the named cases of $CASES (default cases-h200-check.json); with SHARED=1 it then runs
# shared_gpu.sh for MODEL (another process holds HOLD_GIB, the launcher's advice is followed as printed).
# Everything comes back as one tarball, $OUT/check-PART.tgz.
# usage: PART=a bash benchmarks/gpu/h200_check.sh "CASE ..." [SECONDS]
set -u
OUT=${OUT:-/tmp/out}; PART=${PART:-a}; W=/root/check-$PART; mkdir -p $W
export PYTHONPATH=/root/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_USE_DEEP_GEMM=0 CASE_S=${CASE_S:-200}
# transformers' processors import mistral_common, which needs pycountry: a stand-in where it is missing
python3 -c "import pycountry" 2>/dev/null || export PYTHONPATH=$PYTHONPATH:$PWD/benchmarks/gpu/stubs
if [ -n "${1:-}" ]; then
  OUT=$W timeout ${2:-480} python3 benchmarks/gpu/measure_vllm.py ${CASES:-benchmarks/gpu/cases-h200-check.json} $1 > $W/stream.log 2>&1
  python3 -c "
import json
for l in open('$W/results.jsonl'):
    r = json.loads(l); print(r['case'], 'ready', r.get('ready'), r.get('ready_s'), 'w', r.get('weights_gib'), 'kv', r.get('kv_tokens'), 'prof', r.get('profile'), 'enc', r.get('encoder_budget'), r.get('encoder_profile'), 'cg', r.get('cg_est_gib'), r.get('cg_piecewise'), r.get('cg_full'), 'took', r.get('graph_took_gib'), 'req', r.get('requested_gib'), 'used', r.get('used_ready_mib'), 'err', (r.get('error') or '')[:200])"
fi
if [ "${SHARED:-0}" = 1 ]; then
  OUT=$W/shared timeout ${SHARED_S:-300} bash benchmarks/gpu/shared_gpu.sh > $W/shared.log 2>&1; cat $W/shared.log | cut -c1-400
fi
tar czf $OUT/check-$PART.tgz -C $W . && ls -la $OUT
