"""The cross-patient benchmark's support-size study picks the next N other patients, never the query."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "support_patients.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("support_patients_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_support_size_columns_take_the_next_patients_and_skip_sizes_beyond_the_others() -> None:
    bench = _benchmark()
    patients = ["case_0", "case_1", "case_2", "case_3", "case_4"]
    args = SimpleNamespace(columns={"one"}, sizes=[1, 2, 4, 5])
    chosen = dict(bench.columns(patients, 3, args))
    assert chosen == {"one": ["case_4"], "n1": ["case_4"], "n2": ["case_4", "case_0"],
                      "n4": ["case_4", "case_0", "case_1", "case_2"]}  # no n5: only four others
    two = dict(bench.columns(["ct_a", "ct_b"], 1, SimpleNamespace(columns={"one", "all"}, sizes=[1, 2])))
    assert two == {"one": ["ct_a"], "n1": ["ct_a"]}  # 'all' needs two others, as before
