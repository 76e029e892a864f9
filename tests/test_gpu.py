from launcher.gpu import GpuInfo, planned_gpus, visible_indices
from launcher.planning import plan, resolve_model
from launcher.units import GiB


class FakeNvml:
    def __init__(self, gpus):
        self.gpus = gpus

    def list(self):
        return self.gpus


def test_cuda_visible_devices_is_respected():
    assert visible_indices(4, {}) == [0, 1, 2, 3]
    assert visible_indices(4, {"CUDA_VISIBLE_DEVICES": "2,0"}) == [2, 0]
    assert visible_indices(4, {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_indices(4, {"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == [1]


def test_presets_and_sizes():
    assert planned_gpus(None, "H100-80GB", 2)[1].total_bytes == 81559 << 20
    assert planned_gpus("80GiB", None, None)[0].total_bytes == 80 * GiB
    assert planned_gpus("81920MiB", None, None)[0].total_bytes == 80 * GiB
    assert planned_gpus("80GB", None, None)[0].total_bytes == 80 * 10**9


def test_plan_uses_nvml_free_memory_of_the_busiest_gpu():
    ref = resolve_model(None, "qwen2.5", "7", "pytorch", "none")
    src = FakeNvml([GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559 << 20, 80000 << 20, 1559 << 20),
                    GpuInfo(1, "NVIDIA H100 80GB HBM3", 81559 << 20, 30 * GiB, 50 * GiB)])
    p = plan(ref, {"tensor-parallel-size": 2}, gpu_source=src)
    assert p.source == "nvml" and len(p.estimate.gpus) == 2
    assert not p.estimate.fits and "Free memory on device" in p.estimate.reason
    ok = plan(ref, {}, gpu_source=FakeNvml(src.gpus[:1]))
    assert ok.estimate.fits


H100 = "NVIDIA H100 80GB HBM3"


def _gpu(i, free_gib):
    return GpuInfo(i, H100, 81559 << 20, int(free_gib * GiB), (81559 << 20) - int(free_gib * GiB))


def test_auto_picks_the_gpus_with_room_and_says_why():
    ref = resolve_model(None, "qwen2.5", "7", "pytorch", "none")
    src = FakeNvml([_gpu(0, 39.5), _gpu(1, 79.0), _gpu(2, 75.0)])
    p = plan(ref, {}, gpu_source=src, vllm_version="0.24.0")  # the release measured (the CPU build is installed here)
    assert p.chosen_gpus == [1] and p.estimate.fits
    assert p.gpu_choice.startswith("GPU 1 (auto: the most free memory; GPU 0 has 39.5 GiB free")
    p2 = plan(ref, {"tensor-parallel-size": 2}, gpu_source=src, gpus_sel="auto", vllm_version="0.24.0")
    assert p2.chosen_gpus == [1, 2] and [g["index"] for g in p2.estimate.gpus] == [1, 2]
    assert p2.estimate.fits and p2.estimate.gpus[1]["free_bytes"] == int(75 * GiB)  # planned for the less free


def test_pinned_gpus_are_used_as_given_and_a_refusal_lists_free_memory_per_gpu():
    import pytest

    from launcher.errors import BadInput

    ref = resolve_model(None, "qwen2.5", "7", "pytorch", "none")
    src = FakeNvml([_gpu(0, 39.5), _gpu(1, 79.0)])
    p = plan(ref, {}, gpu_source=src, gpus_sel="0")
    assert p.chosen_gpus == [0] and not p.estimate.fits
    assert "Free memory per GPU: GPU 0 39.5/79.6 GiB free, GPU 1 79.0/79.6 GiB free." in p.estimate.reason
    with pytest.raises(BadInput, match="GPU 3 is not visible"):
        plan(ref, {}, gpu_source=src, gpus_sel="3")
    with pytest.raises(BadInput, match="needs 2"):
        plan(ref, {"tensor-parallel-size": 2}, gpu_source=src, gpus_sel="1")
    with pytest.raises(BadInput, match="'auto' or GPU indices"):
        plan(ref, {}, gpu_source=src, gpus_sel="first")


def test_the_server_gets_the_chosen_gpus_unless_the_launch_pins_them(monkeypatch):
    from launcher.launching.prepare import _gpu_env

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _gpu_env([3, 1], {}) == {"CUDA_VISIBLE_DEVICES": "3,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert _gpu_env([3], {"CUDA_VISIBLE_DEVICES": "0"}) == {}  # --env CUDA_VISIBLE_DEVICES=0 wins
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _gpu_env([3], {})["CUDA_VISIBLE_DEVICES"] == "3"  # NVML indices, chosen among the visible ones
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1b2c")
    assert _gpu_env([0], {}) == {}
