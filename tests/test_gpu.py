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
