"""Print the ratio table of benchmarks/test_kernels.py at the end of a run."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter):
    module = next((m for n, m in sys.modules.items() if n.endswith("test_kernels")), None)
    ratios = getattr(module, "RATIOS", {})
    if not ratios:
        return
    from obscore import bench

    terminalreporter.section("kernel ratios (ours / reference, items per second)")
    for name, ratio in ratios.items():
        case = bench.CASES[name]
        target = f"target {case.target:.1f}" if case.target else ""
        terminalreporter.write_line(
            f"{name:<18} {ratio:7.2f}  {target:<12} vs {case.reference_name}"
        )
