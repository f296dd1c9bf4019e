"""Benchmarks of the runtime (torch-free; PyTorch only for the optional eager reference column).

    from gmiseg_edge.jobs.bench import BenchConfig, run_bench
    result = run_bench(BenchConfig(model_dir="models/lite_medsam", precisions=("fp32", "fp16")))
    result.to_dict()                                     # JSON-ready: rows, stages, environment
"""

from gmiseg_edge.jobs.bench.environment import environment
from gmiseg_edge.jobs.bench.latency import STAGES, BenchConfig, BenchResult, VariantResult, run_bench, summarise_times

__all__ = ["STAGES", "BenchConfig", "BenchResult", "VariantResult", "environment", "run_bench", "summarise_times"]
