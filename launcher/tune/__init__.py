"""`launcher tune`: engine settings chosen for named workloads, measured against vLLM's defaults.

1. vLLM's defaults are started first and every workload is swept over its load levels on that one start
   (load is a request-side setting: no restart between levels or workloads).
2. Candidates are proposed from the estimator and from what vLLM resolved for the defaults (the chunked
   prefill step it logged, the KV cache it sized): larger prefill steps for long prompts, smaller ones for
   latency, a larger memory share and a cap on running requests where the workload needs more KV cache
   than the defaults give, and (--allow-fp8-kv-cache) an fp8 KV cache where decode is bound by reading it.
   Each candidate goes through the launch pre-flight, so what cannot fit is pruned with the estimator's
   reason before anything starts.
3. Each remaining candidate is started once (vLLM's compile cache, kept under its cache root, makes later
   starts shorter) and swept like the defaults, within the time budget; results are saved after every
   candidate, so `--resume` carries on where a run stopped.
4. Per workload: the winner is the best score (highest output throughput among load levels that meet the
   latency target), reported against the defaults' score and written as a launch file.

The package, one job per module: results (what was measured and decided, the results file), measure (one start and
its sweeps), propose (where candidates come from), tuner (the loop), report (launch files and the plot).
"""
from .measure import StartMeasurer
from .propose import combine, default_estimate, explicit_grid, fp8_kv_gain, kv_read_bytes, propose
from .report import launch_file, plot
from .results import MIN_GAIN, Candidate, Point, TuneResult, TuneStore, workload_key, workloads_from_key
from .tuner import Tuner

__all__ = ["MIN_GAIN", "Candidate", "Point", "StartMeasurer", "TuneResult", "TuneStore", "Tuner", "combine",
           "default_estimate", "explicit_grid", "fp8_kv_gain", "kv_read_bytes", "launch_file", "plot", "propose",
           "workload_key", "workloads_from_key"]
