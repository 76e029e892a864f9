#!/usr/bin/env bash
# The launcher end to end on a GPU host with vLLM staged (shared/gpu/README.md), dummy weights.
# usage: bash benchmarks/gpu/e2e_launcher.sh A|B   (results under $OUT)
#  A: estimate, launch --detach, chat, kill the engine core (restart only once GPU memory is free), stop,
#     foreground launch + Ctrl-C; NVML memory sampled every 0.5 s throughout.
#  B: smoke with reports; a launch the estimator refuses vs bare vLLM with the same flags (time to fail).
set -u
PART=${1:-A}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=/root/site:/root/site-extra:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 LAUNCHER_HOME=/root/lh PYTHONUNBUFFERED=1
[ -d /root/site-extra ] || python3 -m pip install -q --no-index --no-deps --target /root/site-extra ${WHEELS:-.gpu-p0}/*.whl
L="python3 -m launcher"
M=/root/models/e2e_llama31_8b
[ -d $M ] || python3 benchmarks/gpu/make_dummy_model.py llama-3.1-instruct 8 $M
now() { date +%s.%N; }
el() { python3 -c "import time; print(round(time.time() - $1, 2))"; }
status_field() { $L status "$1" --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['state'], d['restarts'])"; }
wait_state() { for i in $(seq 1 ${3:-300}); do s=$(status_field "$1"); [ "$s" = "$2" ] && return 0; sleep 1; done; return 1; }
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -lms 500 > $OUT/mem-$PART.csv &
SAMPLER=$!
if [ "$PART" = A ]; then
  nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv | tee $OUT/gpu.txt
  python3 -c "import torch; f,t=torch.cuda.mem_get_info(); print('cuda_total_bytes', t, 'cuda_free_bytes', f)" | tee -a $OUT/gpu.txt
  t=$(now); $L estimate --model-path $M --json > $OUT/estimate_8b.json; echo "estimate rc=$? s=$(el $t)"
  t=$(now); $L launch --model-path $M --detach --name e2e --load-format dummy --json > $OUT/launch_detach.json 2>$OUT/launch_detach.err
  echo "detach rc=$? to_ready_s=$(el $t)"
  $L status e2e --json | tee $OUT/status_ready.json
  python3 - <<'PY'
import json, urllib.request
st = json.load(open("/root/lh/runs/e2e/state.json"))
body = json.dumps({"model": "/root/models/e2e_llama31_8b", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 16}).encode()
r = urllib.request.urlopen(urllib.request.Request(st["endpoint"] + "/chat/completions", data=body, headers={"content-type": "application/json"}), timeout=120)
d = json.loads(r.read()); print("chat:", r.status, repr(d["choices"][0]["message"]["content"][:80]), d["usage"])
PY
  python3 - <<'PY'
import json, psutil, time, signal
st = json.load(open("/root/lh/runs/e2e/state.json"))
eng = [p for p in psutil.Process(st["server"]["pid"]).children(recursive=True) if "EngineCore" in " ".join(p.cmdline())]
print("killing EngineCore", eng[0].pid, "at", time.time(), flush=True)
eng[0].send_signal(signal.SIGKILL)
PY
  t=$(now); wait_state e2e "READY 1" 400; echo "restart wait rc=$? restart_to_ready_s=$(el $t)"
  cat /root/lh/runs/e2e/supervisor.log
  $L status e2e --json | tee $OUT/status_restarted.json
  t=$(now); $L stop e2e; echo "stop s=$(el $t)"; sleep 2
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/after stop: used /'
  ps -eo pid,cmd | grep -E "VLLM::|api_server|_supervise" | grep -v grep | sed 's/^/LEFTOVER /'
  # foreground launch, then Ctrl-C
  $L launch --model-path $M --name fg --load-format dummy > $OUT/fg.txt 2>&1 &
  FG=$!
  t=$(now); wait_state fg "READY 0" 400; echo "fg ready rc=$? s=$(el $t)"
  kill -INT $FG; wait $FG; echo "fg exit rc=$?"; sleep 2
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/after ctrl-c: used /'
  ps -eo pid,cmd | grep -E "VLLM::|api_server|_supervise" | grep -v grep | sed 's/^/LEFTOVER /'
  tail -25 $OUT/fg.txt
else
  t=$(now); $L smoke --model-path $M --name smoke8b --load-format dummy --stream --timeout 500 \
     --junit-xml $OUT/junit.xml --report-json $OUT/smoke.json > $OUT/smoke.txt 2>&1; echo "smoke rc=$? s=$(el $t)"
  tail -20 $OUT/smoke.txt
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/after smoke: used /'
  # refused by the estimator vs. bare vLLM with the same flags
  D=/root/models/r1_qwen_32b; [ -d $D ] || python3 benchmarks/gpu/make_dummy_model.py deepseek-r1-distill-qwen 32 $D
  for i in 1 2 3; do t=$(now); $L launch --model-path $D --load-format dummy --max_model_len 131072 2>$OUT/refusal.err; rc=$?; echo "refusal rc=$rc s=$(el $t)"; done
  cat $OUT/refusal.err
  t=$(now); timeout 600 python3 -m vllm.entrypoints.openai.api_server --model $D --load-format dummy --max-model-len 131072 --port 18999 > $OUT/bare_fail.log 2>&1
  echo "bare vllm rc=$? time_to_fail_s=$(el $t)"
  grep -E "To serve at least one request|estimated maximum model length|Model loading took|Available KV" $OUT/bare_fail.log | cut -c1-300
fi
kill $SAMPLER
tar czf $OUT/logs-$PART.tgz -C /root lh 2>/dev/null
