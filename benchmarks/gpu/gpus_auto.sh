#!/usr/bin/env bash
# Two GPUs, one busy: another process holds HOLD_GIB (default 60) of GPU 0; `launcher launch` with no GPU
# pinned (--gpus auto) must pick GPU 1, say so, start there and leave GPU 0 alone.
# usage: bash benchmarks/gpu/gpus_auto.sh     (2 GPUs; vLLM staged under /root/site; results under $OUT)
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=/root/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 LAUNCHER_HOME=/root/lh-auto PYTHONUNBUFFERED=1
L="python3 -m launcher"
M=/root/models/e2e_llama31_8b
[ -d $M ] || python3 benchmarks/gpu/make_dummy_model.py llama-3.1-instruct 8 $M > /dev/null
now() { date +%s.%N; }
el() { python3 -c "import time; print(round(time.time() - $1, 2))"; }
CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=0 python3 -c "
import torch, time
x = torch.empty(int(${HOLD_GIB:-60}) << 30, dtype=torch.uint8, device='cuda')
print('holder ready', flush=True); time.sleep(3600)" > /tmp/holder-auto.log 2>&1 &
HOLDER=$!
for i in $(seq 60); do grep -q ready /tmp/holder-auto.log && break; sleep 0.5; done
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader | tee $OUT/auto-gpus-before.txt
t=$(now); $L estimate --model-path $M --json > $OUT/auto-estimate.json; echo "estimate rc=$? s=$(el $t)"
python3 -c "import json; d=json.load(open('$OUT/auto-estimate.json')); print('estimate chose:', d.get('gpu_choice'), d.get('gpus_chosen', d.get('chosen_gpus')), 'fits', d.get('fits'))"
t=$(now); $L launch --model-path $M --detach --name auto --load-format dummy --json > $OUT/auto-launch.json 2> $OUT/auto-launch.err
echo "auto launch rc=$? to_ready_s=$(el $t)"; grep -iE "GPU|fits" $OUT/auto-launch.err | head -5
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/while serving: /' | tee $OUT/auto-gpus-serving.txt
nvidia-smi --query-compute-apps=pid,gpu_bus_id,used_memory --format=csv,noheader | sed 's/^/app: /'
grep -E "CUDA_VISIBLE_DEVICES|GPU KV cache size" /root/lh-auto/runs/auto/server.log /root/lh-auto/runs/auto/*.json 2>/dev/null | cut -c1-200 | head -5
$L status auto --json > $OUT/auto-status.json; python3 -c "import json; d=json.load(open('$OUT/auto-status.json')); print('status:', d['state'], {k: v for k, v in d.items() if 'gpu' in k.lower()})"
t=$(now); $L stop auto; echo "stop rc=$? s=$(el $t)"
kill $HOLDER; sleep 2
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after: /'
ps -eo pid,cmd | grep -E "VLLM::|api_server|_supervise" | grep -v grep | sed 's/^/LEFTOVER /'
echo "auto done"
