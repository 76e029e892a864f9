#!/usr/bin/env bash
# TP 2 x PP 2 through Ray on one 4-GPU host: two local Ray nodes with two GPUs each (launcher cluster up),
# vLLM over them with the launcher, the estimate for that placement against vLLM's KV cache.
# usage: bash benchmarks/gpu/ray_tp2pp2.sh     (vLLM and Ray staged under /root/site; results under $OUT)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=/root/site:$PWD PATH=/root/site/bin:$PATH VLLM_USE_FLASHINFER_SAMPLER=0 LAUNCHER_HOME=/root/lh-ray PYTHONUNBUFFERED=1
export VLLM_ALLREDUCE_USE_SYMM_MEM=0 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
L="python3 -m launcher"
M=/root/models/e2e_llama31_8b
FLAGS="--tensor-parallel-size 2 --pipeline-parallel-size 2"
[ -d $M ] || python3 benchmarks/gpu/make_dummy_model.py llama-3.1-instruct 8 $M
now() { date +%s.%N; }
el() { python3 -c "import time; print(round(time.time() - $1, 2))"; }
t=$(now); $L cluster up --local-nodes 2 --gpus-per-node 2 > $OUT/ray-up.txt 2>&1; echo "cluster up rc=$? s=$(el $t)"; tail -5 $OUT/ray-up.txt
$L cluster status --json > $OUT/ray-status.json 2>&1; echo "cluster status rc=$?"
t=$(now); $L estimate --model-path $M --ray-address auto $FLAGS --json > $OUT/ray-estimate.json 2>$OUT/ray-estimate.err; echo "estimate rc=$? s=$(el $t)"; tail -3 $OUT/ray-estimate.err
t=$(now); $L launch --model-path $M --ray-address auto $FLAGS --load-format dummy --detach --name raypp --startup-timeout 400 --json > $OUT/ray-launch.json 2>$OUT/ray-launch.err
echo "launch rc=$? to_ready_s=$(el $t)"; tail -5 $OUT/ray-launch.err
python3 - <<'PY'
import json, urllib.request
st = json.load(open("/root/lh-ray/runs/raypp/state.json"))
body = json.dumps({"model": "/root/models/e2e_llama31_8b", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 16}).encode()
r = urllib.request.urlopen(urllib.request.Request(st["endpoint"] + "/chat/completions", data=body, headers={"content-type": "application/json"}), timeout=120)
d = json.loads(r.read()); print("chat:", r.status, d["usage"])
PY
$L status raypp --json > $OUT/ray-status-ready.json 2>&1
python3 benchmarks/gpu/measure_vllm.py --parse /root/lh-ray/runs/raypp/server.log llama31_8b_tp2pp2_ray llama-3.1-instruct 8 $FLAGS > /dev/null
grep -E "GPU KV cache size|Available KV cache|Model loading took|Maximum concurrency|init engine" /root/lh-ray/runs/raypp/server.log | cut -c1-220 > $OUT/ray-server-lines.txt
t=$(now); $L stop raypp; echo "stop rc=$? s=$(el $t)"
t=$(now); $L cluster down; echo "cluster down rc=$? s=$(el $t)"; sleep 2
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after down: gpu,used /'
ps -eo pid,cmd | grep -E "VLLM::|api_server|_supervise|raylet|gcs_server" | grep -v grep | sed 's/^/LEFTOVER /' | cut -c1-150
tail -c 20000 /root/lh-ray/runs/raypp/server.log > $OUT/ray-server-tail.log
