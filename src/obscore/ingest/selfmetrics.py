"""The engine's own counters, written in the Prometheus text format 0.0.4.

:func:`render` takes a plain mapping of values that the engine collects and
returns the body of a ``/metrics`` response, so that a Prometheus (or another
obscore) can scrape obscore itself.  The keys it knows, and the metrics they
become (each name starts with ``obscore_``):

=======================  ===============================  =======  ==================
key                      metric                           type     value
=======================  ===============================  =======  ==================
``samples_ingested``     ``samples_ingested_total``       counter  number
``samples_dropped``      ``samples_dropped_total``        counter  ``{reason: n}``
``cardinality_dropped``  ``cardinality_dropped_total``    counter  ``{(metric,
                                                                   reason): n}``
``series``               ``series``                       gauge    number
``series_limit``         ``series_limit``                 gauge    number
``wal_bytes_written``    ``wal_written_bytes_total``      counter  number
``wal_size_bytes``       ``wal_size_bytes``               gauge    number
``sampling_rate``        ``sampling_rate``                gauge    ``{metric: rate}``
``scrape_targets``       ``scrape_*`` (below)             mixed    list of mappings
=======================  ===============================  =======  ==================

Each entry of ``scrape_targets`` is a mapping with ``job`` and ``instance``
and any of ``up``, ``duration_seconds``, ``samples``, ``scrapes``,
``failures``; they become ``obscore_scrape_up``,
``obscore_scrape_duration_seconds``, ``obscore_scrape_samples`` (gauges of
the last scrape), ``obscore_scrapes_total`` and
``obscore_scrape_failures_total``, labelled by ``job`` and ``instance``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, NamedTuple

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Family(NamedTuple):
    name: str
    type: str
    help: str
    labels: tuple[str, ...]


_FAMILIES: dict[str, _Family] = {
    "samples_ingested": _Family(
        "obscore_samples_ingested_total", "counter", "Samples stored by the engine.", ()
    ),
    "samples_dropped": _Family(
        "obscore_samples_dropped_total",
        "counter",
        "Samples the engine dropped, by reason.",
        ("reason",),
    ),
    "cardinality_dropped": _Family(
        "obscore_cardinality_dropped_total",
        "counter",
        "Samples dropped because their series would pass a series limit.",
        ("metric", "reason"),
    ),
    "series": _Family("obscore_series", "gauge", "Series held by the engine.", ()),
    "series_limit": _Family(
        "obscore_series_limit", "gauge", "Most series the engine will hold.", ()
    ),
    "wal_bytes_written": _Family(
        "obscore_wal_written_bytes_total",
        "counter",
        "Bytes appended to the write-ahead log since the engine opened.",
        (),
    ),
    "wal_size_bytes": _Family(
        "obscore_wal_size_bytes", "gauge", "Size of the write-ahead log.", ()
    ),
    "sampling_rate": _Family(
        "obscore_sampling_rate",
        "gauge",
        "Probability of keeping a histogram observation, by metric.",
        ("metric",),
    ),
}

_TARGET_LABELS = ("job", "instance")
_SCRAPE_FAMILIES: dict[str, _Family] = {
    "up": _Family(
        "obscore_scrape_up",
        "gauge",
        "1 if the last scrape of the target succeeded.",
        _TARGET_LABELS,
    ),
    "duration_seconds": _Family(
        "obscore_scrape_duration_seconds",
        "gauge",
        "Duration of the last scrape.",
        _TARGET_LABELS,
    ),
    "samples": _Family(
        "obscore_scrape_samples",
        "gauge",
        "Samples the last scrape returned.",
        _TARGET_LABELS,
    ),
    "scrapes": _Family(
        "obscore_scrapes_total", "counter", "Scrapes of the target.", _TARGET_LABELS
    ),
    "failures": _Family(
        "obscore_scrape_failures_total",
        "counter",
        "Scrapes of the target that failed.",
        _TARGET_LABELS,
    ),
}


def render(stats: Mapping[str, Any]) -> str:
    """Write engine statistics as a Prometheus text format 0.0.4 exposition.

    Parameters
    ----------
    stats : mapping
        Values by the keys in the module notes; keys left out are not
        written.  A labelled value maps a label value (or a tuple of them,
        in the order of the label names) to a number.

    Returns
    -------
    str
        HELP, TYPE and sample lines per metric, families in the order of
        the module notes and samples sorted by label values; ends with a
        newline.  Serve it with :data:`CONTENT_TYPE`.

    Raises
    ------
    ValueError
        On an unknown key, a label tuple of the wrong length, a scrape target
        without job or instance, or a negative or NaN counter.
    TypeError
        When a value is not a real number.

    Examples
    --------
    >>> print(render({"series": 3, "samples_dropped": {"duplicate": 2}}), end="")
    # HELP obscore_samples_dropped_total Samples the engine dropped, by reason.
    # TYPE obscore_samples_dropped_total counter
    obscore_samples_dropped_total{reason="duplicate"} 2
    # HELP obscore_series Series held by the engine.
    # TYPE obscore_series gauge
    obscore_series 3
    """
    unknown = sorted(set(stats) - set(_FAMILIES) - {"scrape_targets"})
    if unknown:
        raise ValueError(
            f"unknown self-metric keys {unknown!r}; "
            f"known: {', '.join([*_FAMILIES, 'scrape_targets'])}"
        )
    lines: list[str] = []
    for key, family in _FAMILIES.items():
        if key in stats:
            _write_family(lines, family, _samples(key, family, stats[key]))
    if "scrape_targets" in stats:
        for field, family in _SCRAPE_FAMILIES.items():
            samples = _scrape_samples(stats["scrape_targets"], field)
            if samples:
                _write_family(lines, family, samples)
    return "".join(line + "\n" for line in lines)


def _samples(
    key: str, family: _Family, value: Any
) -> list[tuple[tuple[str, ...], float]]:
    if not family.labels:
        return [((), _number(key, value))]
    if not isinstance(value, Mapping):
        raise TypeError(
            f"self-metric {key!r} is labelled by {family.labels!r}; give a mapping "
            f"from label values to numbers, got {type(value).__name__}"
        )
    out = []
    for label_values, v in value.items():
        if not isinstance(label_values, tuple):
            label_values = (label_values,)
        if len(label_values) != len(family.labels):
            raise ValueError(
                f"self-metric {key!r}: {label_values!r} does not give one value "
                f"per label {family.labels!r}"
            )
        out.append((tuple(str(x) for x in label_values), _number(key, v)))
    return sorted(out)


def _scrape_samples(
    targets: Sequence[Mapping[str, Any]], field: str
) -> list[tuple[tuple[str, ...], float]]:
    out = []
    for target in targets:
        if field not in target:
            continue
        missing = [name for name in _TARGET_LABELS if name not in target]
        if missing:
            raise ValueError(f"scrape target {dict(target)!r} has no {missing[0]!r}")
        labels = tuple(str(target[name]) for name in _TARGET_LABELS)
        out.append((labels, _number(f"scrape_targets.{field}", target[field])))
    return sorted(out)


def _number(key: str, value: Any) -> float:
    if not isinstance(value, Real):
        raise TypeError(f"self-metric {key!r} must be a number, got {value!r}")
    return float(value)


def _write_family(
    lines: list[str], family: _Family, samples: list[tuple[tuple[str, ...], float]]
) -> None:
    if family.type == "counter":
        bad = [v for _, v in samples if not v >= 0]
        if bad:
            raise ValueError(
                f"counter {family.name!r} must be non-negative and not NaN, "
                f"got {bad[0]!r}"
            )
    lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
    lines.append(f"# TYPE {family.name} {family.type}")
    for label_values, value in samples:
        if label_values:
            pairs = ",".join(
                f'{name}="{_escape_label(v)}"'
                for name, v in zip(family.labels, label_values)
            )
            lines.append(f"{family.name}{{{pairs}}} {_format(value)}")
        else:
            lines.append(f"{family.name} {_format(value)}")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)
