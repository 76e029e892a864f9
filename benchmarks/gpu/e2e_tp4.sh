#!/usr/bin/env bash
# The launcher end to end with tensor parallel 4 on a 4-GPU host with vLLM staged (shared/gpu/README.md).
# usage: bash benchmarks/gpu/e2e_tp4.sh          (results under $OUT)
# Llama-3.1-8B architecture, dummy weights, fp8 KV cache: estimate, launch --detach, chat, SIGKILL of one
# TP worker -> detected, restart only once all four GPUs' memory is free, READY; stop -> 0 MiB on every GPU,
# no process left. NVML memory of every GPU sampled every 0.5 s. The first start's vLLM log is also
# recorded as a calibration line (measure_vllm.py --parse).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=/root/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 LAUNCHER_HOME=/root/lh-tp4 PYTHONUNBUFFERED=1
export VLLM_ALLREDUCE_USE_SYMM_MEM=0 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
L="python3 -m launcher"
M=/root/models/e2e_llama31_8b
FLAGS="--tensor-parallel-size 4 --kv-cache-dtype fp8"
[ -d $M ] || python3 benchmarks/gpu/make_dummy_model.py llama-3.1-instruct 8 $M
now() { date +%s.%N; }
el() { python3 -c "import time; print(round(time.time() - $1, 2))"; }
status_field() { $L status "$1" --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['state'], d['restarts'])"; }
wait_state() { for i in $(seq 1 ${3:-300}); do s=$(status_field "$1"); [ "$s" = "$2" ] && return 0; sleep 1; done; return 1; }
nvidia-smi --query-gpu=timestamp,index,memory.used --format=csv,noheader -lms 500 > $OUT/tp4-mem.csv &
SAMPLER=$!
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv | tee $OUT/tp4-gpu.txt
t=$(now); $L estimate --model-path $M $FLAGS --json > $OUT/tp4-estimate.json; echo "estimate rc=$? s=$(el $t)"
t=$(now); $L launch --model-path $M --detach --name tp4 --load-format dummy $FLAGS --json > $OUT/tp4-launch.json 2>$OUT/tp4-launch.err
echo "detach rc=$? to_ready_s=$(el $t)"; tail -3 $OUT/tp4-launch.err
cp /root/lh-tp4/runs/tp4/server.log /tmp/tp4-first.log
python3 benchmarks/gpu/measure_vllm.py --parse /tmp/tp4-first.log llama31_8b_tp4_fp8kv llama-3.1-instruct 8 $FLAGS > /dev/null
python3 - <<'PY'
import json, urllib.request
st = json.load(open("/root/lh-tp4/runs/tp4/state.json"))
body = json.dumps({"model": "/root/models/e2e_llama31_8b", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 16}).encode()
r = urllib.request.urlopen(urllib.request.Request(st["endpoint"] + "/chat/completions", data=body, headers={"content-type": "application/json"}), timeout=120)
d = json.loads(r.read()); print("chat:", r.status, repr(d["choices"][0]["message"]["content"][:60]), d["usage"])
PY
python3 - <<'PY'
import json, psutil, time, signal
st = json.load(open("/root/lh-tp4/runs/tp4/state.json"))
tree = psutil.Process(st["server"]["pid"]).children(recursive=True)
for p in tree:
    print("tree:", p.pid, " ".join(p.cmdline())[:80])
workers = [p for p in tree if "Worker" in " ".join(p.cmdline())]
victim = next((p for p in workers if "TP1" in " ".join(p.cmdline())), workers[-1] if workers else None)
print("killing TP worker", victim.pid, " ".join(victim.cmdline())[:60], "at", time.time(), flush=True)
victim.send_signal(signal.SIGKILL)
PY
t=$(now); wait_state tp4 "READY 1" 420; echo "restart wait rc=$? kill_to_ready_s=$(el $t)"
cat /root/lh-tp4/runs/tp4/supervisor.log
$L status tp4 --json > $OUT/tp4-status-restarted.json
t=$(now); $L stop tp4; echo "stop rc=$? s=$(el $t)"; sleep 2
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after stop: gpu,used /'
ps -eo pid,cmd | grep -E "VLLM::|api_server|_supervise" | grep -v grep | sed 's/^/LEFTOVER /'
echo "leftover check done"
kill $SAMPLER
cp /root/lh-tp4/runs/tp4/supervisor.log $OUT/tp4-supervisor.log
grep -E "GPU KV cache size|Available KV cache|Model loading took|Maximum concurrency|init engine" /root/lh-tp4/runs/tp4/server.log | cut -c1-200 > $OUT/tp4-server-lines.txt
