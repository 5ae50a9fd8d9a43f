"""The engine's configuration, read from one TOML file.

The defaults ship as ``obscore/obscore.toml``; a user file is laid over them
key by key (tables merge, arrays of metrics replace by name).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, NamedTuple

from obscore.durations import parse_duration
from obscore.errors import ConfigError
from obscore.model import MetricKind, MetricSpec, check_label_name, check_metric_name


@dataclass(frozen=True, slots=True)
class Config:
    """Validated settings; every duration in milliseconds."""

    metrics: dict[str, MetricSpec]
    hot_capacity: int = 8640
    rollup_steps_ms: tuple[int, ...] = (60_000, 300_000, 3_600_000)
    out_of_order_ms: int = 600_000
    max_future_ms: int = 600_000
    wal_fsync_ms: int = 0
    on_conflict: str = "reject"
    retention_ms: dict[str, int] = field(default_factory=dict)
    zscore_window_ms: int = 300_000
    zscore_threshold: float = 3.0
    iforest_train_ms: int = 7 * 86_400_000
    iforest_predict_ms: int = 300_000
    iforest_trees: int = 100
    iforest_max_samples: int = 256
    detector: str = "novelty"
    detect_threshold: float = 0.5
    detector_plugins: tuple[str, ...] = ()
    dedup_window_ms: int = 900_000
    dedup_similarity: float = 0.8
    approval_severity: float = 0.7
    correlation_window_ms: int = 3_600_000
    min_correlation: float = 0.7
    pattern_similarity: float = 0.8
    granger_alpha: float = 0.05
    granger_maxlag: int = 3
    act_confidence: float = 0.8
    pattern_files: tuple[str, ...] = ()
    sampling_baseline: float = 0.1
    sampling_burst: float = 1.0
    sampling_trigger: dict[str, float] = field(default_factory=dict)
    sampling_anomaly_ms: int = 300_000
    sampling_error_pattern: str = "error"
    scrape_targets: tuple[ScrapeTarget, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def spec_of(self, name: str) -> MetricSpec | None:
        """The declared spec of a series name (a histogram's ``_bucket``,
        ``_sum`` and ``_count`` map to it), or None when it is undeclared."""
        spec = self.metrics.get(name)
        if spec is None:
            for suffix in ("_bucket", "_sum", "_count"):
                base = self.metrics.get(name.removesuffix(suffix))
                if name.endswith(suffix) and base is not None and base.is_histogram:
                    return base
        return spec


class ScrapeTarget(NamedTuple):
    """One target of a ``[[scrape]]`` table: where, how often, with what labels."""

    url: str
    job: str
    interval_ms: int
    timeout_ms: int
    labels: dict[str, str]


#: The keys a config file may set: a table maps its keys to their own schema,
#: None marks a value checked where it is read (rules, routing, actions,
#: policies, scrape targets, services) or a plain value.
_SCHEMA: dict[str, Any] = {
    "metrics": {
        k: None
        for k in ("name", "kind", "labels", "buckets", "help", "unit", "group", "weight")
    },
    "store": {
        k: None
        for k in (
            "hot_capacity", "rollup_steps", "out_of_order_window", "max_future",
            "on_conflict", "wal_fsync", "block_duration", "warm_step", "cold_step",
            "compact_interval",
        )
    },
    "limits": {"series_per_metric": None, "series_total": None},
    "retention": {"hot": None, "warm": None, "cold": None},
    "sampling": {
        k: None
        for k in (
            "mode", "baseline_rate", "burst_rate", "window", "enter_factor",
            "exit_factor", "exit_windows", "min_count", "min_burst", "max_burst",
            "half_life_windows", "warmup_windows", "anomaly_burst", "error_metrics",
        )
    },
    "detectors": {
        "default": None,
        "threshold": None,
        "plugins": None,
        "zscore": {"window": None, "threshold": None},
        "iforest": {"train": None, "predict": None, "n_trees": None, "max_samples": None},
    },
    "alerts": {
        k: None
        for k in ("dedup_window", "similarity", "approval_severity", "rules", "routing")
    },
    "diagnosis": {
        k: None
        for k in (
            "correlation_window", "min_correlation", "pattern_similarity",
            "granger_alpha", "granger_maxlag", "act_confidence", "patterns",
        )
    },
    "pipeline": {
        k: None
        for k in (
            "step", "settle", "catch_up", "quiet", "interval", "live",
            "change_lookback", "business_owner", "keep",
        )
    },
    "escalation": {"resolve_after": None, "policies": None},
    "remediation": {"actions": None},
    "scrape": None,
    "services": None,
}


def _check_keys(node: dict[str, Any], schema: dict[str, Any], where: str, source: str) -> None:
    """Refuse a key of ``node`` that ``schema`` does not know, suggesting the
    closest known one; recurse into known tables and arrays of tables."""
    import difflib

    for key, value in node.items():
        dotted = f"{where}.{key}" if where else key
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            what = "table" if isinstance(value, (dict, list)) and not where else "key"
            raise ConfigError(
                f"{source}, {dotted}: unknown {what}{hint} (known: {', '.join(schema)})"
            )
        sub = schema[key]
        if sub is None:
            continue
        if isinstance(value, dict):
            _check_keys(value, sub, dotted, source)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _check_keys(item, sub, f"{dotted}[{i}]", source)


def _check_user_file(user: dict[str, Any], source: str) -> None:
    """The checks of a user's file that the merge would hide: unknown keys and
    a metric declared twice."""
    _check_keys(user, _SCHEMA, "", source)
    seen: set[str] = set()
    for i, m in enumerate(user.get("metrics", [])):
        name = m.get("name") if isinstance(m, dict) else None
        if name in seen:
            raise ConfigError(
                f"{source}, metrics[{i}]: metric {name!r} is declared twice; "
                "keep one [[metrics]] table per name"
            )
        if isinstance(name, str):
            seen.add(name)


def _default_text() -> str:
    return resources.files("obscore").joinpath("obscore.toml").read_text("utf-8")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key == "metrics" and isinstance(value, list):
            by_name = {m.get("name"): m for m in out.get("metrics", [])}
            for m in value:
                by_name[m.get("name")] = m
            out["metrics"] = list(by_name.values())
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, *, overrides: dict | None = None) -> Config:
    """Read the default configuration, then ``path`` over it.

    Parameters
    ----------
    path : str or Path, optional
        A TOML file; None uses the defaults alone.
    overrides : dict, optional
        Nested settings applied last (as if written in the file).

    Raises
    ------
    ConfigError
        Naming the file, the key and what was wrong.
    """
    raw = tomllib.loads(_default_text())
    source = "obscore.toml (defaults)"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {source!r}: {exc.strerror}") from exc
        try:
            user = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        _check_user_file(user, source)
        raw = _merge(raw, user)
    if overrides:
        raw = _merge(raw, overrides)
    return _build(raw, source)


def _get(raw: dict, dotted: str, default: Any) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _choice(raw: dict, key: str, default: str, allowed: tuple[str, ...], source: str) -> str:
    value = _get(raw, key, default)
    if value not in allowed:
        raise ConfigError(f"{source}, {key}: {value!r} is not one of {list(allowed)!r}")
    return str(value)


def _name(raw: dict, key: str, default: str, source: str) -> str:
    # a detector name: checked against the registry when the detector is made
    value = _get(raw, key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}, {key}: expected a detector name, got {value!r}")
    return value


def _strings(raw: dict, key: str, source: str) -> tuple[str, ...]:
    value = _get(raw, key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{source}, {key}: expected a list of module names, got {value!r}")
    return tuple(value)


def _build(raw: dict[str, Any], source: str) -> Config:
    def duration(key: str, default: str) -> int:
        value = _get(raw, key, default)
        try:
            return parse_duration(value)
        except ConfigError as exc:
            raise ConfigError(f"{source}, {key}: {exc}") from None

    def number(key: str, default: float, lo: float, hi: float) -> float:
        value = _get(raw, key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}, {key}: expected a number, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(f"{source}, {key}: {value!r} is outside [{lo}, {hi}]")
        return float(value)

    metrics: dict[str, MetricSpec] = {}
    kinds = [k.value for k in MetricKind]
    for i, m in enumerate(raw.get("metrics", [])):
        # i counts the merged list (defaults first): the name tells the user more
        where = f"{source}, metrics[{i}]"
        if "name" in m:
            where = f"{source}, metric {m['name']!r}"
        if m.get("kind", "gauge") not in kinds:
            raise ConfigError(
                f"{where}: {m.get('kind')!r} is not a valid metric kind; "
                f"expected one of {kinds!r}"
            )
        try:
            name = check_metric_name(str(m["name"]))
            kind = MetricKind(m.get("kind", "gauge"))
            labels = tuple(check_label_name(str(x)) for x in m.get("labels", []))
            bounds = tuple(float(b) for b in m.get("buckets", []))
        except KeyError:
            raise ConfigError(f"{where}: 'name' is required") from None
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if kind is MetricKind.HISTOGRAM:
            if not bounds or any(b >= c for b, c in zip(bounds, bounds[1:])):
                raise ConfigError(
                    f"{where}: buckets must be strictly increasing and "
                    f"non-empty, got {list(bounds)!r}"
                )
        metrics[name] = MetricSpec(
            name=name,
            kind=kind,
            labels=labels,
            help=str(m.get("help", "")),
            unit=str(m.get("unit", "")),
            bounds=bounds,
            group=str(m.get("group", "application")),
            weight=float(m.get("weight", 1.0)),
        )
    steps = _get(raw, "store.rollup_steps", ["1m", "5m", "1h"])
    try:
        steps_ms = tuple(parse_duration(s) for s in steps)
    except ConfigError as exc:
        raise ConfigError(f"{source}, store.rollup_steps: {exc}") from None
    from obscore.alert.lifecycle import validate_config  # deferred: alert imports stay light

    validate_config(raw, source)  # [[alerts.rules]], [alerts.routing], [[remediation.actions]]
    # read where they are used; checked here so that a bad one is named with its file at once
    for key in ("step", "settle", "catch_up", "quiet", "interval", "change_lookback", "keep"):
        if key in raw.get("pipeline", {}):
            duration(f"pipeline.{key}", "0s")
    if "resolve_after" in raw.get("escalation", {}):
        duration("escalation.resolve_after", "0s")
    return Config(
        metrics=metrics,
        hot_capacity=int(number("store.hot_capacity", 8640, 1, 1e9)),
        rollup_steps_ms=steps_ms,
        out_of_order_ms=duration("store.out_of_order_window", "10m"),
        max_future_ms=duration("store.max_future", "10m"),
        wal_fsync_ms=duration("store.wal_fsync", "0s"),
        on_conflict=_choice(raw, "store.on_conflict", "reject", ("reject", "last"), source),
        retention_ms={
            t: duration(f"retention.{t}", d)
            for t, d in (("hot", "7d"), ("warm", "30d"), ("cold", "365d"))
        },
        zscore_window_ms=duration("detectors.zscore.window", "5m"),
        zscore_threshold=number("detectors.zscore.threshold", 3.0, 0, 1e9),
        iforest_train_ms=duration("detectors.iforest.train", "7d"),
        iforest_predict_ms=duration("detectors.iforest.predict", "5m"),
        iforest_trees=int(number("detectors.iforest.n_trees", 100, 1, 10_000)),
        iforest_max_samples=int(number("detectors.iforest.max_samples", 256, 2, 1e7)),
        detector=_name(raw, "detectors.default", "novelty", source),
        detect_threshold=number("detectors.threshold", 0.5, 0, 1),
        detector_plugins=_strings(raw, "detectors.plugins", source),
        dedup_window_ms=duration("alerts.dedup_window", "15m"),
        dedup_similarity=number("alerts.similarity", 0.8, 0, 1),
        approval_severity=number("alerts.approval_severity", 0.7, 0, 1),
        correlation_window_ms=duration("diagnosis.correlation_window", "1h"),
        min_correlation=number("diagnosis.min_correlation", 0.7, 0, 1),
        pattern_similarity=number("diagnosis.pattern_similarity", 0.8, 0, 1),
        granger_alpha=number("diagnosis.granger_alpha", 0.05, 0, 1),
        granger_maxlag=int(number("diagnosis.granger_maxlag", 3, 1, 50)),
        act_confidence=number("diagnosis.act_confidence", 0.8, 0, 1),
        pattern_files=tuple(str(p) for p in _get(raw, "diagnosis.patterns", [])),
        sampling_baseline=number("sampling.baseline_rate", 0.1, 0, 1),
        sampling_burst=number("sampling.burst_rate", 1.0, 0, 1),
        sampling_trigger=_sampling_trigger(raw, source, duration, number),
        sampling_anomaly_ms=duration("sampling.anomaly_burst", "5m"),
        sampling_error_pattern=_pattern(raw, "sampling.error_metrics", "error", source),
        scrape_targets=_scrape_targets(raw, source),
        raw=raw,
    )


def _sampling_trigger(raw: dict, source: str, duration, number) -> dict[str, float]:
    """The burst trigger of ``[sampling]``, as keyword arguments of the sampler."""
    out: dict[str, float] = {
        "window_ms": duration("sampling.window", "1s"),
        "enter_factor": number("sampling.enter_factor", 3.0, 1, 1e6),
        "exit_factor": number("sampling.exit_factor", 1.5, 1, 1e6),
        "exit_windows": int(number("sampling.exit_windows", 3, 1, 1e6)),
        "half_life_windows": number("sampling.half_life_windows", 30.0, 1e-3, 1e6),
        "warmup_windows": int(number("sampling.warmup_windows", 5, 0, 1e6)),
        "min_count": number("sampling.min_count", 30.0, 0, 1e12),
        "min_burst_ms": duration("sampling.min_burst", "5s"),
        "max_burst_ms": duration("sampling.max_burst", "5m"),
    }
    if out["window_ms"] <= 0:
        raise ConfigError(f"{source}, sampling.window: must be positive, got 0")
    if out["exit_factor"] > out["enter_factor"]:
        raise ConfigError(
            f"{source}, sampling.exit_factor: {out['exit_factor']!r} is above "
            f"sampling.enter_factor {out['enter_factor']!r}; the gap between them "
            "is the hysteresis, so exit_factor <= enter_factor"
        )
    if out["min_burst_ms"] > out["max_burst_ms"]:
        raise ConfigError(
            f"{source}, sampling.min_burst: {out['min_burst_ms']} ms is longer than "
            f"sampling.max_burst {out['max_burst_ms']} ms"
        )
    return out


def _pattern(raw: dict, key: str, default: str, source: str) -> str:
    value = _get(raw, key, default)
    if not isinstance(value, str):
        raise ConfigError(
            f"{source}, {key}: expected a regular expression, got {value!r}"
        )
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(
            f"{source}, {key}: {value!r} is not a regular expression: {exc}"
        ) from None
    return value


_SCRAPE_KEYS = ("job", "targets", "interval", "timeout", "labels")


def _scrape_targets(raw: dict, source: str) -> tuple[ScrapeTarget, ...]:
    """The targets of the ``[[scrape]]`` tables, checked."""
    tables = raw.get("scrape", [])
    if not isinstance(tables, list):
        raise ConfigError(
            f"{source}, scrape: expected an array of tables ([[scrape]]), "
            f"got {tables!r}"
        )
    out: list[ScrapeTarget] = []
    for i, table in enumerate(tables):
        where = f"{source}, scrape[{i}]"
        unknown = sorted(set(table) - set(_SCRAPE_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown keys {unknown!r}; expected some of "
                f"{list(_SCRAPE_KEYS)!r}"
            )
        job = table.get("job")
        if not isinstance(job, str) or not job:
            raise ConfigError(f"{where}.job: expected a non-empty string, got {job!r}")
        urls = table.get("targets")
        if not isinstance(urls, list) or not urls or not all(
            isinstance(u, str) for u in urls
        ):
            raise ConfigError(
                f"{where}.targets: expected a non-empty list of URLs, got {urls!r}"
            )
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"{where}.targets: {url!r} is not an http:// or https:// URL "
                    "with a host"
                )
        try:
            interval_ms = parse_duration(table.get("interval", "15s"))
        except ConfigError as exc:
            raise ConfigError(f"{where}.interval: {exc}") from None
        try:
            timeout_ms = parse_duration(table.get("timeout", min(10_000, interval_ms)))
        except ConfigError as exc:
            raise ConfigError(f"{where}.timeout: {exc}") from None
        if interval_ms <= 0:
            raise ConfigError(
                f"{where}.interval: must be positive, got {table.get('interval')!r}"
            )
        if not 0 < timeout_ms <= interval_ms:
            raise ConfigError(
                f"{where}.timeout: {table.get('timeout')!r} must be positive and at "
                f"most the interval {table.get('interval', '15s')!r}"
            )
        labels = table.get("labels", {})
        if not isinstance(labels, dict) or not all(
            isinstance(v, str) for v in labels.values()
        ):
            raise ConfigError(
                f"{where}.labels: expected a table of strings, got {labels!r}"
            )
        for name in labels:
            try:
                check_label_name(name)
            except ValueError as exc:
                raise ConfigError(f"{where}.labels: {exc}") from None
            if name in ("job", "instance"):
                raise ConfigError(
                    f"{where}.labels: {name!r} is set by the scraper; "
                    f"use scrape[{i}].job"
                )
        out.extend(
            ScrapeTarget(u, job, interval_ms, timeout_ms, dict(labels)) for u in urls
        )
    return tuple(out)
