#!/usr/bin/env bash
# A GPU shared with another process: it holds HOLD_GIB (default 40) of the GPU; the launcher refuses the
# default launch and advises a utilization; the advice is followed as printed and must reach READY.
# usage: bash benchmarks/gpu/shared_gpu.sh        (vLLM staged under /root/site; results under $OUT)
#        GPU=1 bash benchmarks/gpu/shared_gpu.sh  (on a host with several GPUs: hold and pin that one)
#        MODEL="qwen3 8" bash benchmarks/gpu/shared_gpu.sh  (another catalog model, dummy weights)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=/root/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 LAUNCHER_HOME=/root/lh-shared PYTHONUNBUFFERED=1
L="python3 -m launcher"
PIN=${GPU:+--gpus $GPU}
MODEL=${MODEL:-llama-3.1-instruct 8}
M=/root/models/e2e_$(echo $MODEL | tr ' .-' '___')
[ -d $M ] || python3 benchmarks/gpu/make_dummy_model.py $MODEL $M > /dev/null
now() { date +%s.%N; }
el() { python3 -c "import time; print(round(time.time() - $1, 2))"; }
CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=${GPU:-0} python3 -c "
import torch, time, sys
x = torch.empty(int(${HOLD_GIB:-40}) << 30, dtype=torch.uint8, device='cuda')
print('holder ready', flush=True); time.sleep(3600)" > /tmp/holder.log 2>&1 &
HOLDER=$!
for i in $(seq 60); do grep -q ready /tmp/holder.log && break; sleep 0.5; done
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader | tee $OUT/shared-gpu.txt
t=$(now); $L launch --model-path $M $PIN --detach --name shared --load-format dummy 2> $OUT/shared-refusal.err; echo "default launch rc=$? s=$(el $t)"
cat $OUT/shared-refusal.err
ADVICE=$(grep -oE -- "--gpu-memory-utilization [0-9.]+( with --max-model-len [0-9]+)?" $OUT/shared-refusal.err | head -1 | sed 's/ with / /')
echo "following: $ADVICE"
t=$(now); $L launch --model-path $M $PIN --detach --name shared --load-format dummy $ADVICE --json > $OUT/shared-launch.json 2> $OUT/shared-launch.err
echo "advised launch rc=$? to_ready_s=$(el $t)"; tail -3 $OUT/shared-launch.err
python3 -c "import json; r=json.load(open('/root/lh-shared/runs/shared/launch.json')); print('server argv:', ' '.join(r['argv'][3:]), 'launcher_env:', r.get('launcher_env'))"
$L status shared --json | python3 -c "import json,sys; d=json.load(sys.stdin); print('status:', d['state'], 'restarts', d['restarts'], 'kv', d['kv_cache_tokens'])"
M=$M python3 - <<'PY'
import json, os, urllib.request
st = json.load(open("/root/lh-shared/runs/shared/state.json"))
# token ids, not text: the dummy word-level tokenizer may turn a chat prompt into nothing for some models
body = json.dumps({"model": os.environ["M"], "prompt": [11, 12, 13, 14], "max_tokens": 16}).encode()
r = urllib.request.urlopen(urllib.request.Request(st["endpoint"] + "/completions", data=body, headers={"content-type": "application/json"}), timeout=120)
print("completion:", r.status, json.loads(r.read())["usage"])
PY
nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/while serving: used /'
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | sed 's/^/per process: /'
grep -E "Free memory|Model loading took|Available KV cache|GPU KV cache size|Graph capturing|CUDA graph|out of memory|Error" /root/lh-shared/runs/shared/server.log | cut -c1-220 > $OUT/shared-server-lines.txt; cat $OUT/shared-server-lines.txt
$L estimate --model-path $M $PIN $ADVICE --json > $OUT/shared-estimate-followed.json 2>&1
t=$(now); $L stop shared; echo "stop rc=$? s=$(el $t)"
kill $HOLDER; sleep 2
nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/after stop and holder gone: used /'
ps -eo pid,cmd | grep -E "VLLM::|api_server|_supervise" | grep -v grep | sed 's/^/LEFTOVER /'
echo "shared done"
