"""Before a multimodal start: write the first case's dummy model folder and load its processor the way
vLLM does (transformers' AutoProcessor), so that a missing module fails in seconds, not after vLLM's
start-up. usage: python3 benchmarks/gpu/processor_check.py CASES.json"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dummy_model import write_model  # noqa: E402

case = next(c for c in json.load(open(sys.argv[1])) if c.get("tokenizer"))
write_model("/tmp/processor-check", case["config"], tokenizer=case["tokenizer"])
from transformers import AutoProcessor  # noqa: E402

print(case["case"], type(AutoProcessor.from_pretrained("/tmp/processor-check")).__name__, "loads")
