"""Kernel benchmarks against their references, and the regression guard.

Each :class:`Case` builds its data once from a fixed seed, then times our
kernel and its reference on the same data in the same process, and reports
both rates and their ratio (ours / reference). The ratio cancels most of the
machine's speed, so a committed baseline of ratios can guard CI against a
kernel that got slower: :func:`check` fails when a ratio falls more than
``tolerance`` below its baseline.

``benchmarks/test_kernels.py`` runs the same cases at full size under
pytest-benchmark; ``obscore bench`` runs a short version.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: References that are optional packages: the ``bench`` or ``test`` extra.
OPTIONAL_REFERENCES = ("duckdb", "polars", "prometheus_client")


@dataclass(frozen=True, slots=True)
class Case:
    """One kernel against its reference.

    ``setup(n)`` returns the data for ``n`` items (samples, rows, calls);
    ``ours(data)`` and ``reference(data)`` process all of them once.
    ``check(data)`` (optional) raises when our result and the reference's
    disagree, so a fast wrong kernel never reports a ratio.
    """

    name: str
    what: str
    reference_name: str
    full_size: int
    short_size: int
    setup: Callable[[int], Any]
    ours: Callable[[Any], Any]
    reference: Callable[[Any], Any]
    needs: tuple[str, ...] = ()
    check: Callable[[Any], None] | None = None
    target: float | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """Rates in items per second and their ratio, for one case."""

    name: str
    size: int
    ours: float
    reference: float

    @property
    def ratio(self) -> float:
        return self.ours / self.reference

    def as_dict(self) -> dict[str, float]:
        return {"ours": self.ours, "reference": self.reference, "ratio": self.ratio}


# --- the cases ---


def _iforest_setup(n: int) -> dict[str, Any]:
    from sklearn.ensemble import IsolationForest

    from obscore._native.iforest import Forest

    rng = np.random.default_rng(10)
    X = rng.normal(size=(n, 8))
    X[: n // 100] += 4.0  # a few outliers, so paths differ in depth
    model = IsolationForest(n_estimators=100, max_samples=256, random_state=0)
    model.fit(X[: min(n, 100_000)])
    columns = [np.ascontiguousarray(X[:, j]) for j in range(8)]
    return {"X": X, "model": model, "forest": Forest.from_sklearn(model), "columns": columns}


def _iforest_check(d: dict[str, Any]) -> None:
    ours = d["forest"].score(d["columns"][:], 1)[:2000]
    ref = d["model"].score_samples(d["X"][:2000])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


def _zscore_setup(n: int) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    values = np.cumsum(rng.normal(size=n)) * 0.01 + rng.normal(size=n)
    return {"values": values, "scores": np.empty(n)}


def _zscore_ours(d: dict[str, Any]) -> None:
    from obscore._native.zscore import zscore_rolling

    zscore_rolling(d["values"], 300, d["scores"])


def _zscore_reference(d: dict[str, Any]) -> Any:
    import pandas as pd

    s = pd.Series(d["values"])
    r = s.rolling(300)
    return r.mean(), r.std()


def _zscore_check(d: dict[str, Any]) -> None:
    import pandas as pd

    from obscore._native.zscore import zscore_rolling

    x = d["values"][:50_000]
    got = np.empty_like(x)
    zscore_rolling(x, 300, got)
    s = pd.Series(x)
    r = s.rolling(300, min_periods=2)
    want = ((s - r.mean().shift()) / r.std().shift()).to_numpy()
    np.testing.assert_allclose(got[300:], want[300:], rtol=1e-9)


_LATENCY_BOUNDS = np.array([10.0, 50.0, 100.0, 200.0, 500.0, 1000.0])


def _latencies(n: int) -> np.ndarray:
    return np.random.default_rng(12).lognormal(4.0, 1.0, size=n)


def _hist_setup(n: int) -> dict[str, Any]:
    return {"values": _latencies(n), "counts": np.zeros(7)}


def _hist_ours(d: dict[str, Any]) -> None:
    from obscore._native.histogram import hist_bucketize

    hist_bucketize(d["values"], _LATENCY_BOUNDS, d["counts"])


def _hist_reference(d: dict[str, Any]) -> np.ndarray:
    idx = np.searchsorted(_LATENCY_BOUNDS, d["values"], side="left")
    return np.bincount(idx, minlength=7)


def _hist_check(d: dict[str, Any]) -> None:
    from obscore._native.histogram import hist_bucketize

    counts = np.zeros(7)
    hist_bucketize(d["values"], _LATENCY_BOUNDS, counts)
    np.testing.assert_array_equal(counts, _hist_reference(d))


def _observe_setup(n: int) -> dict[str, Any]:
    import prometheus_client

    from obscore._native.histogram import HistogramCell

    registry = prometheus_client.CollectorRegistry()
    prom = prometheus_client.Histogram(
        "latency", "request latency", buckets=list(_LATENCY_BOUNDS), registry=registry
    )
    return {
        "values": _latencies(n).tolist(),
        "cell": HistogramCell(_LATENCY_BOUNDS),
        "prom": prom,
    }


def _observe_ours(d: dict[str, Any]) -> None:
    observe = d["cell"].observe
    for v in d["values"]:
        observe(v)


def _observe_reference(d: dict[str, Any]) -> None:
    observe = d["prom"].observe
    for v in d["values"]:
        observe(v)


def _rollup_setup(n: int) -> dict[str, Any]:
    n_series = 1000
    per = max(n // n_series, 1)
    rng = np.random.default_rng(13)
    groups = np.repeat(np.arange(n_series, dtype=np.int64), per)
    ts = np.tile(np.arange(per, dtype=np.int64) * 10_000, n_series)
    values = rng.normal(size=groups.size)
    return {"groups": groups, "ts": ts, "values": values}


def _rollup_ours(d: dict[str, Any]) -> Any:
    from obscore._native.rollup import rollup_fold

    return rollup_fold(d["groups"], d["ts"], d["values"], 60_000, False)


def _duckdb_query(d: dict[str, Any]) -> Any:
    import duckdb
    import pyarrow as pa

    if "duckdb" not in d:
        con = duckdb.connect()
        con.execute("SET threads = 2")
        con.register("samples", pa.table({"g": d["groups"], "ts": d["ts"], "v": d["values"]}))
        d["duckdb"] = con
    return d["duckdb"].sql(
        "SELECT g, time_bucket(INTERVAL 1 MINUTE, epoch_ms(ts)) AS step, count(v), "
        "sum(v), min(v), max(v), last(v ORDER BY ts) FROM samples GROUP BY g, step"
    ).to_arrow_table()


def _polars_query(d: dict[str, Any]) -> Any:
    import polars as pl

    if "polars" not in d:
        d["polars"] = pl.DataFrame(
            {"g": d["groups"], "ts": pl.Series(d["ts"]).cast(pl.Datetime("ms")), "v": d["values"]}
        )
    v = pl.col("v")
    return (
        d["polars"]
        .group_by_dynamic("ts", every="1m", group_by="g")
        .agg(v.count().alias("count"), v.sum().alias("sum"), v.min().alias("min"),
             v.max().alias("max"), v.last().alias("last"))
    )


def _rollup_check(d: dict[str, Any]) -> None:
    out = _rollup_ours(d)
    ref = _polars_query(d).sort(["g", "ts"])
    np.testing.assert_array_equal(out["count"], ref["count"].to_numpy())
    np.testing.assert_array_equal(out["min"], ref["min"].to_numpy())
    np.testing.assert_array_equal(out["max"], ref["max"].to_numpy())
    np.testing.assert_array_equal(out["last"], ref["last"].to_numpy())
    np.testing.assert_allclose(out["sum"], ref["sum"].to_numpy(), rtol=1e-12)


_RINGBUF_ROUNDS = 8  # timed runs of one setup (warm-up and check included)


def _ringbuf_setup(n: int) -> dict[str, Any]:
    from obscore._native.ringbuf import RingBuffers

    n_series, capacity = 1000, 8640
    n_scrapes = max(n // n_series, 1)
    rng = np.random.default_rng(14)
    slots = rng.permutation(n_series).astype(np.int64)  # scrape order != slot order
    # every run appends later samples than the last (the ring refuses older
    # ones), from arrays built here so that no run allocates
    steps = np.arange(1, _RINGBUF_ROUNDS * n_scrapes + 1, dtype=np.int64) * 10_000
    scrape_ts = np.repeat(steps, n_series).reshape(_RINGBUF_ROUNDS, n_scrapes, n_series)
    values = [rng.normal(size=n_series) for _ in range(n_scrapes)]
    return {
        "rings": RingBuffers(capacity, n_series),
        "slots": slots,
        "ts": scrape_ts,
        "values": values,
        "status": np.empty(n_series, dtype=np.uint8),
        "np_ts": np.zeros((n_series, capacity), dtype=np.int64),
        "np_values": np.zeros((n_series, capacity)),
        "np_heads": np.zeros(n_series, dtype=np.int64),
        "capacity": capacity,
        "round": [0],
    }


def _ringbuf_ours(d: dict[str, Any]) -> None:
    from obscore._native.ringbuf import RingBuffers

    k = d["round"][0] % _RINGBUF_ROUNDS
    if k == 0 and d["round"][0] > 0:
        # the prepared ts are used up: start a new ring (slower, as its
        # memory is touched for the first time; only --handicap gets here)
        d["rings"] = RingBuffers(d["capacity"], len(d["slots"]))
    d["round"][0] += 1
    rings, slots, status, rounds = d["rings"], d["slots"], d["status"], d["ts"][k]
    for ts, values in zip(rounds, d["values"]):
        rings.push(slots, ts, values, status)


def _ringbuf_reference(d: dict[str, Any]) -> None:
    # The ring a NumPy user writes: a head per series, a fancy-index scatter
    # per scrape, heads advanced and wrapped (no order checks, which ours does).
    slots, cap = d["slots"], d["capacity"]
    np_ts, np_values, heads = d["np_ts"], d["np_values"], d["np_heads"]
    for ts, values in zip(d["ts"][0], d["values"]):
        pos = heads[slots]
        np_ts[slots, pos] = ts
        np_values[slots, pos] = values
        pos += 1
        pos[pos == cap] = 0
        heads[slots] = pos


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case(
            "iforest", "1M rows x 8 features, 100 trees of 256 samples, 1 thread",
            "sklearn IsolationForest.score_samples", 1_000_000, 100_000,
            _iforest_setup, lambda d: d["forest"].score(d["columns"], 1),
            lambda d: d["model"].score_samples(d["X"]), check=_iforest_check, target=6.0,
        ),
        Case(
            "iforest_2threads", "the same forest and rows, 2 threads vs 1 thread",
            "obscore iforest, 1 thread", 1_000_000, 100_000,
            _iforest_setup, lambda d: d["forest"].score(d["columns"], 2),
            lambda d: d["forest"].score(d["columns"], 1), target=1.8,
        ),
        Case(
            "zscore", "10M points, window 300", "pandas rolling(300).mean() and .std()",
            10_000_000, 2_000_000, _zscore_setup, _zscore_ours, _zscore_reference,
            check=_zscore_check, target=8.0,
        ),
        Case(
            "histogram", "10M lognormal latencies into 7 buckets, batched",
            "numpy searchsorted + bincount", 10_000_000, 2_000_000,
            _hist_setup, _hist_ours, _hist_reference, check=_hist_check, target=10.0,
        ),
        Case(
            "histogram_observe", "1M per-call observe of lognormal latencies",
            "prometheus_client Histogram.observe", 1_000_000, 200_000,
            _observe_setup, _observe_ours, _observe_reference,
            needs=("prometheus_client",), target=3.0,
        ),
        Case(
            "rollup", "10M samples of 1,000 series into 1m steps",
            "DuckDB time_bucket group-by (2 threads)", 10_000_000, 2_000_000,
            _rollup_setup, _rollup_ours, _duckdb_query,
            needs=("duckdb", "polars"), check=_rollup_check, target=10.0,
        ),
        Case(
            "rollup_polars", "10M samples of 1,000 series into 1m steps",
            "polars group_by_dynamic", 10_000_000, 2_000_000,
            _rollup_setup, _rollup_ours, _polars_query, needs=("polars",), target=10.0,
        ),
        Case(
            "ringbuf", "10M appends in scrapes of 1,000 series, 8,640 slots each",
            "preallocated NumPy scatter with a head per series", 10_000_000, 2_000_000,
            _ringbuf_setup, _ringbuf_ours, _ringbuf_reference, target=5.0,
        ),
    ]
}


# --- running ---


def missing_packages(case: Case) -> list[str]:
    """The optional packages a case needs that are not installed."""
    missing = []
    for name in case.needs:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    """Fastest of ``repeat`` runs of ``fn``, in seconds, with the GC off."""
    times = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return min(times)


def run_case(case: Case, size: int, repeat: int = 3, handicap: int = 1) -> Result:
    """Time one case; ``handicap`` runs our kernel that many times per timing.

    The handicap exists to show that :func:`check` catches a slowed kernel.
    """
    data = case.setup(size)
    if case.check is not None:
        case.check(data)
    case.ours(data)  # warm-up: imports, first-touch of outputs
    case.reference(data)

    def ours() -> None:
        for _ in range(handicap):
            case.ours(data)

    t_ours = best_time(ours, repeat)
    t_ref = best_time(lambda: case.reference(data), repeat)
    return Result(case.name, size, size / t_ours, size / t_ref)


def run(
    names: Iterable[str] | None = None,
    full: bool = False,
    repeat: int = 3,
    handicaps: dict[str, int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Result], dict[str, str]]:
    """Run cases by name (all by default); return results and skipped reasons."""
    handicaps = handicaps or {}
    results: dict[str, Result] = {}
    skipped: dict[str, str] = {}
    for name in names or CASES:
        if name not in CASES:
            raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(CASES)}")
        case = CASES[name]
        missing = missing_packages(case)
        if missing:
            skipped[name] = f"needs {', '.join(missing)} (pip install 'obscore[bench]')"
            logger.warning("benchmark %s skipped: %s", name, skipped[name])
            continue
        if progress is not None:
            progress(name)
        size = case.full_size if full else case.short_size
        results[name] = run_case(case, size, repeat, handicaps.get(name, 1))
        logger.info("benchmark %s: ratio %.2f", name, results[name].ratio)
    return results, skipped


# --- the regression guard ---


def machine_profile() -> str:
    """A name for this machine's kind: architecture, CPU model and widest SIMD.

    Kernel ratios depend on the vector width the CPU offers (a bucketing loop
    compiled for AVX-512 gains more over NumPy than the same loop on AVX2), so
    the baseline keeps ratios per machine profile.
    """
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = " ".join(value.split())
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    simd = next((f for f in ("avx512f", "avx2", "sse4_2", "asimd") if f in flags), "")
    return " ".join(part for part in (platform.machine(), model, simd) if part)


def _ratios(entries: dict[str, Any]) -> dict[str, float]:
    return {name: float(entry["ratio"]) for name, entry in entries.items()}


def load_baseline(path: str | Path, profile: str | None = None) -> dict[str, float]:
    """Baseline ratios ``{kernel: ratio}`` for this machine's profile.

    The file is either the flat ``{kernel: {ours, reference, ratio}}`` that
    ``--json`` writes, or ``{"profiles": {name: {"ratios": {...}}}}`` as
    ``--save-baseline`` writes it. With profiles, the entry of ``profile``
    (default :func:`machine_profile`) is used when the file has one; on a
    machine of another kind each kernel's lowest ratio over all profiles is
    the baseline, so an unknown machine is held to what every known one met.
    """
    data = json.loads(Path(path).read_text())
    if "profiles" not in data:
        return _ratios(data)
    profiles = {name: _ratios(p["ratios"]) for name, p in data["profiles"].items()}
    profile = machine_profile() if profile is None else profile
    if profile in profiles:
        logger.info("baseline %s: profile %r", path, profile)
        return profiles[profile]
    logger.info("baseline %s: no profile %r, lowest ratio of %d profiles", path, profile, len(profiles))
    lowest: dict[str, float] = {}
    for ratios in profiles.values():
        for name, ratio in ratios.items():
            lowest[name] = min(ratio, lowest.get(name, ratio))
    return lowest


def describe_baseline(path: str | Path) -> str:
    """Which entry of ``path`` :func:`load_baseline` uses on this machine."""
    data = json.loads(Path(path).read_text())
    if "profiles" not in data:
        return f"{path} (one profile)"
    profile = machine_profile()
    if profile in data["profiles"]:
        return f"{path}, profile {profile!r}"
    return (
        f"{path}, lowest ratio of its {len(data['profiles'])} profiles "
        f"(none for this machine, {profile!r})"
    )


def save_baseline(
    path: str | Path, results: dict[str, Result], profile: str | None = None, note: str = ""
) -> str:
    """Write ``results`` as the baseline of ``profile`` in ``path``, keeping
    the other profiles (a flat file becomes the profile ``"unnamed"``)."""
    path = Path(path)
    data: dict[str, Any] = {"profiles": {}}
    if path.exists():
        old = json.loads(path.read_text())
        data = old if "profiles" in old else {"profiles": {"unnamed": {"ratios": old}}}
    profile = machine_profile() if profile is None else profile
    entry: dict[str, Any] = {"ratios": {k: r.as_dict() for k, r in results.items()}}
    if note:
        entry["note"] = note
    data["profiles"][profile] = entry
    path.write_text(json.dumps(data, indent=2) + "\n")
    return profile


def check(
    results: dict[str, Result], baseline: dict[str, float], tolerance: float = 0.25
) -> list[str]:
    """Regressions: kernels whose ratio fell more than ``tolerance`` below baseline.

    Returns one message per regression (empty when all hold). A kernel in the
    baseline but not in the results is not a regression (it was skipped).
    """
    problems = []
    for name, base in sorted(baseline.items()):
        if name not in results:
            continue
        ratio = results[name].ratio
        floor = base * (1.0 - tolerance)
        if ratio < floor:
            problems.append(
                f"{name}: ratio {ratio:.2f} is below {floor:.2f} "
                f"(baseline {base:.2f} less {tolerance:.0%})"
            )
    return problems


def table(results: dict[str, Result]) -> str:
    """The ratio table ``obscore bench`` prints."""
    lines = [
        f"{'kernel':<18} {'size':>10} {'ours/s':>12} {'reference/s':>12} {'ratio':>7} "
        f"{'target':>7}  reference"
    ]
    for name, r in results.items():
        case = CASES[name]
        target = f"{case.target:.1f}" if case.target else "-"
        lines.append(
            f"{name:<18} {r.size:>10,} {r.ours:>12,.0f} {r.reference:>12,.0f} "
            f"{r.ratio:>7.2f} {target:>7}  {case.reference_name}"
        )
    return "\n".join(lines)
