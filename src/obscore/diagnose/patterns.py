"""The pattern library and symptoms: what kind of incident this looks like.

Symptoms are features of one candidate service in an incident, each in
[0, 1]: which of its metrics moved and which way (``memory_usage_up``,
``error_rate:5xx_up``), which moved first (``first:<metric>``), their shape
(``trend:<metric>``, ``saturated:<metric>``), which at least tripled
relative to before (``large:<metric>``), whether a change event preceded the
incident (``change_event``), and whether the service's callees or callers
were affected.  A pattern is a weighted signature over those features with a
cause metric and resolution steps; patterns ship in ``obscore/patterns.toml``
and users add their own files.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from obscore.errors import ConfigError

_SUBLABELS = ("error_type", "direction")

#: A metric whose median during the anomaly is at least this many times its
#: median before, relative to it, has the ``large:<metric>`` feature (2 = tripled).
LARGE_CHANGE = 2.0


@dataclass(frozen=True, slots=True)
class Pattern:
    """A known kind of incident."""

    name: str
    cause_metric: str
    signature: dict[str, float]
    steps: tuple[str, ...] = ()
    description: str = ""
    cause_labels: dict[str, str] = field(default_factory=dict)

    def similarity(self, features: Mapping[str, float]) -> float:
        """The weighted share of the signature present in ``features``, in [0, 1]."""
        total = got = 0.0
        for feat, weight in self.signature.items():
            w = abs(float(weight))
            total += w
            if feat.startswith("not:"):
                got += w * (1.0 - features.get(feat[4:], 0.0))
            else:
                got += w * features.get(feat, 0.0)
        return got / total if total else 0.0


def load_patterns(paths: Sequence[str | Path] = ()) -> list[Pattern]:
    """The shipped patterns, then those of each file in ``paths`` (same name replaces)."""
    texts = [("obscore/patterns.toml", resources.files("obscore").joinpath("patterns.toml").read_text("utf-8"))]
    for p in paths:
        texts.append((str(p), Path(p).read_text("utf-8")))
    by_name: dict[str, Pattern] = {}
    for source, text in texts:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        for i, p in enumerate(raw.get("patterns", [])):
            try:
                pat = Pattern(
                    name=str(p["name"]),
                    cause_metric=str(p["cause_metric"]),
                    signature={str(k): float(v) for k, v in p["signature"].items()},
                    steps=tuple(str(s) for s in p.get("steps", ())),
                    description=str(p.get("description", "")),
                    cause_labels={str(k): str(v) for k, v in p.get("cause_labels", {}).items()},
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{source}, patterns[{i}]: missing or bad field {exc}") from None
            by_name[pat.name] = pat
    return list(by_name.values())


def _feature_name(a) -> str:
    parts = [a.metric] + [a.labels[k] for k in _SUBLABELS if k in a.labels]
    return ":".join(parts)


def symptoms(
    service: str,
    anomalies: Sequence,
    signals: Mapping[str, object],
    dependencies: Mapping[str, Sequence[str]] | None,
    changes: Sequence[str] = (),
    baseline_ms: int = 3_600_000,
) -> dict[str, float]:
    """Features of ``service`` in an incident, each in [0, 1]."""
    own = [a for a in anomalies if a.labels.get("service") == service]
    f: dict[str, float] = {}
    if not own:
        return f
    onset = min(a.start_ms for a in own)
    rel: dict[str, float] = {}
    for a in own:
        name = _feature_name(a)
        direction = "up" if a.peak_z > 0 else "down"
        f[f"{name}_{direction}"] = 1.0
        if ":" in name:
            f[f"{a.metric}_{direction}"] = 1.0
        if a.start_ms - onset <= 10_000:
            f[f"first:{a.metric}"] = 1.0
        sig = signals.get(a.signal)
        if sig is None:
            continue
        lo, hi = np.searchsorted(sig.ts, [a.start_ms, a.end_ms + 1])
        during = sig.values[lo:hi]
        b0, b1 = np.searchsorted(sig.ts, [a.start_ms - baseline_ms, a.start_ms - 60_000])
        before = sig.values[b0:b1]
        during, before = during[np.isfinite(during)], before[np.isfinite(before)]
        if len(during) >= 30 and np.ptp(during) > 0:
            r = np.corrcoef(np.arange(len(during)), during)[0, 1]
            if abs(r) >= 0.9:
                f[f"trend:{a.metric}"] = 1.0
        if a.metric == "cpu_usage" and len(during) and np.max(during) >= 90.0:
            f["saturated:cpu_usage"] = 1.0
        if len(before) and len(during):
            pre = float(np.median(before))
            change = abs(float(np.median(during)) - pre) / max(abs(pre), 1e-9)
            rel[a.metric] = max(rel.get(a.metric, 0.0), change)
    for metric, change in rel.items():
        if change >= LARGE_CHANGE:
            f[f"large:{metric}"] = 1.0
    if changes:
        f["change_event"] = 1.0
    if dependencies is not None:
        affected = {a.labels.get("service") for a in anomalies}
        callees = set(dependencies.get(service, ()))
        callers = {s for s, cs in dependencies.items() if service in cs}
        f["callees_anomalous"] = 1.0 if callees & affected else 0.0
        f["callers_anomalous"] = 1.0 if callers & affected else 0.0
    return f


def match(patterns: Sequence[Pattern], features: Mapping[str, float]) -> list[tuple[Pattern, float]]:
    """Patterns with their similarity, best first."""
    scored = [(p, p.similarity(features)) for p in patterns]
    return sorted(scored, key=lambda ps: ps[1], reverse=True)
