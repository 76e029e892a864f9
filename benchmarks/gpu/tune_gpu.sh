#!/usr/bin/env bash
# `launcher tune` on one GPU with vLLM staged (docs/gpu.md), Llama-3.1-8B shapes with dummy weights.
# usage: bash benchmarks/gpu/tune_gpu.sh tune BUDGET   tune $WORKLOADS (rag,batch; run it again: --resume
#                                                       carries on; $EXTRA: more tune options, e.g.
#                                                       --allow-fp8-kv-cache; $WLARGS: workload
#                                                       overrides for tune and bench, e.g. --output-len
#                                                       1024:3072, with VB_IN/VB_OUT/VB_RATIO the same
#                                                       lengths for vllm bench serve)
#        bash benchmarks/gpu/tune_gpu.sh check          defaults vs each winner: launcher bench on every
#                                                       tuned workload, vllm bench serve on batch (the
#                                                       same lengths through its random dataset)
# Results under $OUT (tar them); the tune's own folder is /root/tune.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=/root/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 LAUNCHER_HOME=/root/lh-tune PYTHONUNBUFFERED=1
L="python3 -m launcher"
M=/root/models/llama31_8b
WL=${WORKLOADS:-rag,batch}
[ -d $M ] || python3 benchmarks/gpu/make_dummy_model.py llama-3.1-instruct 8 $M > /dev/null
now() { date +%s.%N; }
el() { python3 -c "import time; print(round(time.time() - $1, 2))"; }
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader | tee -a $OUT/gpu.txt

if [ "$1" = tune ]; then
  t=$(now)
  $L tune --model-path $M --load-format dummy --max-model-len 8192 --workload $WL --budget "$2" ${WLARGS:-} \
     --out-dir /root/tune --resume --json ${EXTRA:-} > $OUT/tune.json 2> $OUT/tune.err
  echo "tune rc=$? s=$(el $t)"; grep -v "^\s*$" $OUT/tune.err | tail -40
  cp /root/tune/*.yaml /root/tune/results.json $OUT/ 2>/dev/null
  tar czf $OUT/server-logs.tgz -C /root/lh-tune runs 2>/dev/null
  exit 0
fi

# check: defaults and each distinct winner started once more; on each, every workload it won (all of them
# for the defaults) at the winner's best load level: launcher bench, and vllm bench serve for batch.
python3 benchmarks/gpu/tune_check_plan.py /root/tune/results.json > /root/check-plan.txt; cat /root/check-plan.txt
port() { python3 -c "import json; print(json.load(open('/root/lh-tune/runs/$1/state.json'))['port'])"; }
while read -r -u 3 name wls args; do
  args=${args//\"/}
  t=$(now); $L launch --model-path $M --load-format dummy --max-model-len 8192 --detach --name $name $args \
     > /dev/null 2> $OUT/launch-$name.err; echo "launch $name ($args) rc=$? to_ready_s=$(el $t)"
  for wc in ${wls//,/ }; do
    w=${wc%%@*}; C=${wc#*@}; C=${C%%x*}; N=${wc##*x}
    if [ $w = batch ]; then
      python3 -m vllm.entrypoints.cli.main bench serve --backend vllm --base-url http://127.0.0.1:$(port $name) \
        --model $M --dataset-name random --random-input-len ${VB_IN:-640} --random-output-len ${VB_OUT:-320} --random-range-ratio ${VB_RATIO:-0.6} \
        --num-prompts $N --max-concurrency $C --ignore-eos --seed 1 --save-result --result-dir $OUT \
        --result-filename vllm-bench-$name-$w.json > $OUT/vllm-bench-$name-$w.txt 2>&1
      echo "vllm bench serve $name $w@$C rc=$?"
      grep -E "Output token throughput|Mean TPOT|Median ITL|P99 TTFT" $OUT/vllm-bench-$name-$w.txt | sed 's/^/  /'
    fi
    $L bench --name $name --workload $w -c $C -n $N --seed 1 ${WLARGS:-} --json > $OUT/bench-$name-$w.json 2> $OUT/bench-$name-$w.err
    echo "launcher bench $name $w@$C rc=$?"
    python3 -c "
import json; d=json.load(open('$OUT/bench-$name-$w.json'))
print('  out tok/s %.1f  p99 TTFT %.0f ms  mean TPOT %.2f ms  median ITL %.2f ms  server %s' % (d['output_throughput'],
      d['ttft_s']['p99']*1e3, d['tpot_s']['mean']*1e3, d['itl_s']['p50']*1e3, d['server']))"
  done
  t=$(now); $L stop $name; echo "stop $name rc=$? s=$(el $t)"
done 3< /root/check-plan.txt
nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/after: used /'
tar czf $OUT/check-server-logs.tgz -C /root/lh-tune runs 2>/dev/null
