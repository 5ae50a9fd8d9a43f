"""Every native kernel against its reference, at full size, in one run.

The cases (data, our call, the reference call, a correctness check) are the
ones of ``obscore.bench``, so ``obscore bench`` and this file time the same
thing; here at the full sizes of issue #10 (10M samples, 1M rows), which
leave the CPU caches. Each kernel is one benchmark group with two rows,
``ours`` and ``reference``; the ratio of their means (items per second,
ours / reference) is printed at the end of the run and stored in the
``reference`` row's ``extra_info``.

Run with ``python -m pytest benchmarks/test_kernels.py --benchmark-only``.
"""

from __future__ import annotations

import pytest

from obscore import bench

RATIOS: dict[str, float] = {}
_MEANS: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module", params=list(bench.CASES))
def case_data(request):
    case = bench.CASES[request.param]
    missing = bench.missing_packages(case)
    if missing:
        pytest.skip(f"{case.name} needs {', '.join(missing)}")
    data = case.setup(case.full_size)
    if case.check is not None:
        case.check(data)  # a wrong kernel reports no speed
    return case, data


@pytest.mark.parametrize("side", ["ours", "reference"])
def test_kernel(benchmark, case_data, side):
    case, data = case_data
    benchmark.group = f"{case.name}: {case.what}"
    fn = case.ours if side == "ours" else case.reference
    fn(data)  # warm-up
    benchmark.pedantic(fn, args=(data,), rounds=3, iterations=1)
    mean = benchmark.stats.stats.mean
    _MEANS[(case.name, side)] = mean
    benchmark.extra_info["items_per_s"] = case.full_size / mean
    other = _MEANS.get((case.name, "ours"))
    if side == "reference" and other:
        RATIOS[case.name] = mean / other
        benchmark.extra_info["ratio_ours_over_reference"] = round(mean / other, 2)
        benchmark.extra_info["target"] = case.target
