"""What a model's weights take on the GPU as vLLM loads them, block by block (the CUDA caching allocator's view).

For each config: vLLM's own loader builds the model with dummy weights on the GPU, inside vLLM's
DeviceMemoryProfiler (the "Model loading took" figure), then torch.cuda.memory_snapshot() lists every block:
its size as the allocator holds it and the bytes asked for. Written as one JSON line per config:
consumed (vLLM's figure), params and buffers (what the meta-device construction counts), and the
allocator's blocks grouped by (size, requested) with counts.

usage: python3 benchmarks/gpu/alloc_snapshot.py CASES.json OUT.jsonl   (CASES: [{"id", "config"}, ...])
"""
import json
import os
import socket
import sys
import tempfile
import time
from collections import Counter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def blocks(torch) -> Counter:
    """(block size, requested size) -> count over the active blocks of every segment."""
    out = Counter()
    for seg in torch.cuda.memory_snapshot():
        for b in seg.get("blocks", []):
            if b.get("state") == "active_allocated":
                out[(b["size"], b.get("requested_size", b["size"]), seg.get("segment_type", "?"))] += 1
    return out


def main() -> None:
    cases, out_path = json.load(open(sys.argv[1])), sys.argv[2]
    device = os.environ.get("SNAPSHOT_DEVICE", "cuda")
    import torch
    from vllm.config import set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel, destroy_model_parallel
    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.model_loader import get_model_loader
    try:
        from vllm.utils.mem_utils import DeviceMemoryProfiler
    except ImportError:  # older releases
        from vllm.utils import DeviceMemoryProfiler
    if device != "cuda":  # the dry run: no accelerator to empty
        torch.accelerator.empty_cache = lambda: None
    dist = mp = False
    for case in cases:
        t0 = time.time()
        row = {"id": case["id"]}
        with tempfile.TemporaryDirectory() as d:
            json.dump(case["config"], open(os.path.join(d, "config.json"), "w"))
            try:
                vc = EngineArgs(model=d, load_format="dummy", skip_tokenizer_init=True, enforce_eager=True,
                                max_model_len=case.get("max_model_len", 4096)).create_engine_config()
                with set_current_vllm_config(vc):
                    if not dist:
                        init_distributed_environment(world_size=1, rank=0, local_rank=0,
                                                     distributed_init_method=f"tcp://127.0.0.1:{free_port()}",
                                                     backend="nccl" if device == "cuda" else "gloo")
                        dist = True
                    if mp:
                        destroy_model_parallel()
                    initialize_model_parallel(1, 1)
                    mp = True
                    if device == "cuda":
                        torch.cuda.empty_cache()
                        before = torch.cuda.memory_allocated()
                    if device == "cuda":
                        with DeviceMemoryProfiler() as prof:
                            model = get_model_loader(vc.load_config).load_model(vllm_config=vc,
                                                                                 model_config=vc.model_config)
                        row["consumed"] = int(prof.consumed_memory)
                    else:  # a dry run of the script's logic on a host without a GPU
                        model = get_model_loader(vc.load_config).load_model(vllm_config=vc, model_config=vc.model_config)
                    row["params"] = sum(p.numel() * p.element_size() for p in model.parameters())
                    row["param_tensors"] = sum(1 for _ in model.parameters())
                    row["buffers"] = sum(b.numel() * b.element_size() for b in model.buffers())
                    row["buffer_list"] = [[n, list(b.shape), str(b.dtype)] for n, b in model.named_buffers()][:40]
                    if device == "cuda":
                        row["allocated_delta"] = torch.cuda.memory_allocated() - before
                        row["reserved"] = torch.cuda.memory_reserved()
                        got = blocks(torch)
                        row["blocks"] = sorted([[s, r, t, n] for (s, r, t), n in got.items()], key=lambda x: -x[0] * x[3])
                        row["block_bytes"] = sum(s * n for s, r, t, n in row["blocks"])
                        row["requested_bytes"] = sum(r * n for s, r, t, n in row["blocks"])
                    del model
                    if device == "cuda":
                        torch.cuda.empty_cache()
            except BaseException as e:  # noqa: BLE001 - one config's failure is a result
                import traceback
                row["error"] = f"{type(e).__name__}: {e}"[:500]
                row["where"] = traceback.format_exc().strip().splitlines()[-3][:300]
        row["seconds"] = round(time.time() - t0, 1)
        with open(out_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k not in ("blocks", "buffer_list")}), flush=True)


if __name__ == "__main__":
    main()
