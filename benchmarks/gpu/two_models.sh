#!/usr/bin/env bash
# Two models on one GPU, started through `launcher launch` at the same moment, each with its own
# --gpu-memory-budget (dummy weights); the start lock lets one start at a time, the second is planned beside the
# first. Blind estimates: `launcher estimate --gpu H200 --gpu-memory-budget ...` committed beforehand
# (benchmarks/results/h200-users-blind/two_*.json). Results under $OUT/two.
# usage: bash benchmarks/gpu/two_models.sh   (vLLM staged under /root/site, typer/rich wheels in $WHEELS)
set -u
OUT=${OUT:-/tmp/out}/two; mkdir -p "$OUT"
export PYTHONPATH=/root/site:/root/site-extra:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 LAUNCHER_HOME=/root/lh-two PYTHONUNBUFFERED=1
[ -d /root/site-extra ] || python3 -m pip install -q --no-index --no-deps --target /root/site-extra ${WHEELS:-.gpu-p0}/*.whl
L="python3 -m launcher"
A=/root/models/two_qwen25_7b; B=/root/models/two_llama31_8b
[ -d $A ] || python3 benchmarks/gpu/make_dummy_model.py qwen2.5-instruct 7 $A > /dev/null
[ -d $B ] || python3 benchmarks/gpu/make_dummy_model.py llama-3.1-instruct 8 $B > /dev/null
now() { date +%s.%N; }
el() { python3 -c "import time; print(round(time.time() - $1, 2))"; }
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader | tee $OUT/gpu.txt
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -lms 500 > $OUT/mem.csv &
SAMPLER=$!
t=$(now)
$L launch --model-path $A --detach --name qwen --load-format dummy --gpu-memory-budget ${BUDGET_A:-50GiB} --json > $OUT/launch-qwen.json 2> $OUT/launch-qwen.err &
PA=$!
$L launch --model-path $B --detach --name llama --load-format dummy --gpu-memory-budget ${BUDGET_B:-60GiB} --json > $OUT/launch-llama.json 2> $OUT/launch-llama.err &
PB=$!
wait $PA; echo "qwen launch rc=$? s=$(el $t)"
wait $PB; echo "llama launch rc=$? s=$(el $t)"
for n in qwen llama; do
  tail -4 $OUT/launch-$n.err
  $L status $n --json > $OUT/status-$n.json; python3 -c "import json; d=json.load(open('$OUT/status-$n.json')); print('$n', d['state'], 'kv', d.get('kv_cache_tokens'))"
  python3 -c "import json; r=json.load(open('/root/lh-two/runs/$n/launch.json')); print('$n argv:', ' '.join(r['argv'][3:]), 'env:', r.get('launcher_env'))"
  grep -E "Free memory|Model loading took|Available KV cache|GPU KV cache size|Graph capturing|CUDA graph|memory profiling|non KV|out of memory|Error" /root/lh-two/runs/$n/server.log | cut -c1-260 > $OUT/server-lines-$n.txt; cat $OUT/server-lines-$n.txt
  N=$n python3 - <<'PY'
import json, os, urllib.request
st = json.load(open(f"/root/lh-two/runs/{os.environ['N']}/state.json"))
name = json.loads(urllib.request.urlopen(st["endpoint"] + "/models", timeout=30).read())["data"][0]["id"]
body = json.dumps({"model": name, "prompt": [11, 12, 13, 14], "max_tokens": 16}).encode()
try:
    r = urllib.request.urlopen(urllib.request.Request(st["endpoint"] + "/completions", data=body, headers={"content-type": "application/json"}), timeout=120)
    print(os.environ["N"], "completion:", r.status, json.loads(r.read())["usage"])
except Exception as e:
    print(os.environ["N"], "completion failed:", e)
PY
done
nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/both serving: used /'
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | sed 's/^/per process: /'
$L ps --json > $OUT/ps.json 2>&1
cp /root/lh-two/runs/qwen/server.log $OUT/server-qwen.log; cp /root/lh-two/runs/llama/server.log $OUT/server-llama.log
for n in qwen llama; do t=$(now); $L stop $n; echo "stop $n s=$(el $t)"; done; sleep 2
for n in qwen llama; do cp /root/lh-two/runs/$n/supervisor.log $OUT/supervisor-$n.log; done
nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/after stop: used /'
ps -eo pid,cmd | grep -E "VLLM::|api_server|_supervise" | grep -v grep | sed 's/^/LEFTOVER /'
kill $SAMPLER
echo "two done"
