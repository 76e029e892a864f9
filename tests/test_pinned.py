"""The host memory a sleeping server's weights take (estimator/pinned.py): one pinned backup per weight allocation,
its 2 MiB pages rounded up to a power of two by torch's caching host allocator. Expected values worked by hand from
the shapes vLLM builds, and the H100 measurement (vLLM 0.26.0, 2026-12-07: the host's available memory fell by
19,210,506,240 bytes at Llama-3.1-8B's first sleep, benchmarks/results/h100-round3/C/first-sleep.json)."""
from launcher.estimator.blocks import large_tensors
from launcher.estimator.pinned import backup_bytes, pinned_weights_bytes
from launcher.gateway.sizing import host_asleep_of
from launcher.planning import resolve_model

MiB = 1 << 20


def _arch(family, size):
    return resolve_model(None, family, size, None, None, parse_arch=True).arch


def test_each_backup_is_its_2_mib_pages_rounded_up_to_a_power_of_two():
    assert backup_bytes(224 * MiB) == 256 * MiB  # Llama-3.1-8B's gate and up projection, 2 x 14336 x 4096 x 2 bytes
    assert backup_bytes(2 * 18944 * 3584 * 2) == 512 * MiB  # Qwen2.5-7B's: 259 MiB
    assert backup_bytes(32 * MiB) == 32 * MiB  # a power of two already
    assert backup_bytes(33 * MiB) == 64 * MiB
    assert backup_bytes(1) == 2 * MiB and backup_bytes(0) == 0


def test_llama_3_1_8b_asleep_takes_what_the_h100_host_lost_and_qwen2_5_7b_nearly_twice_its_weights():
    llama = _arch("llama-3.1-instruct", "8")
    # by hand: embedding and LM head 1002 MiB each -> 1024; per layer QKV 48 -> 64, O 32, gate+up 224 -> 256,
    # down 112 -> 128: 480 MiB x 32 layers
    assert sum(backup_bytes(t) for t in large_tensors(llama)) == (2 * 1024 + 32 * 480) * MiB
    assert pinned_weights_bytes(llama) >= 19_210_506_240  # never less than the host lost
    qwen = _arch("qwen2.5-instruct", "7")
    # embedding and LM head 1039.5 MiB -> 2048 each; per layer QKV 31.5 -> 32, O 24.5 -> 32, gate+up 259 -> 512,
    # down 129.5 -> 256: 832 MiB x 28 layers
    assert sum(backup_bytes(t) for t in large_tensors(qwen)) == (2 * 2048 + 28 * 832) * MiB


def test_the_gateway_counts_the_backups_on_every_gpu_and_an_older_record_its_weights():
    assert host_asleep_of({"host_asleep_bytes": 10, "weights_bytes": 8, "gpus": [{}, {}]}) == 20
    assert host_asleep_of({"weights_bytes": 8, "gpus": [{}]}) == 8  # recorded before the count existed
