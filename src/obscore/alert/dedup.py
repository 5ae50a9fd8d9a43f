"""Turn anomalies into alerts and fold repeats of the same alert.

An alert is identified by its fingerprint, a stable hex hash of its label
set.  A new alert whose fingerprint fired within the dedup window (15m by
default) of the last one is folded into it: the count grows and the end moves
forward, but no new alert is raised.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit hash of a label set (order does not matter).

    >>> fingerprint({"b": "2", "a": "1"}) == fingerprint({"a": "1", "b": "2"})
    True
    """
    # NOTE: one update over the joined bytes gives the same digest as one
    # update per label and is 3x faster at 6 labels (benchmarks/test_alerts.py).
    text = "".join(f"{k}\xff{v}\xfe" for k, v in sorted(labels.items()))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def severity(
    score: float, duration_ms: int, breadth: int = 1, weight: float = 1.0
) -> float:
    """Severity in [0, 1] from the peak score, the duration and the breadth.

    ``score`` is the detector score in [0, 1] (0.5 at the threshold); a
    longer anomaly (saturating at 15 minutes), more affected series and a
    heavier business ``weight`` raise it.  A NaN score counts as the
    threshold itself.  The formula is a weighted sum clipped to [0, 1],
    described in ``docs/alerts.md``.
    """
    if not math.isfinite(score):
        score = 1.0 if score == float("inf") else 0.5
    s = min(max((score - 0.5) * 2.0, 0.0), 1.0)
    d = min(duration_ms / 900_000.0, 1.0)
    b = 1.0 - 1.0 / max(breadth, 1)
    raw = (0.55 * s + 0.25 * d + 0.2 * b) * weight
    return float(min(max(raw, 0.0), 1.0))


@dataclass(slots=True)
class Alert:
    """One alert, possibly folding several repeats of the same fingerprint."""

    fingerprint: str
    labels: dict[str, str]
    start_ms: int
    end_ms: int
    severity: float
    score: float
    summary: str
    count: int = 1
    incident_id: int | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    members: set[str] = field(default_factory=set)  # fingerprints folded in by similarity

    @property
    def is_severe(self) -> bool:
        return self.severity > 0.7


#: Label weights of the similarity measure: the alert name and the service say
#: most about "the same problem", other labels (region, host, ...) less.
LABEL_WEIGHTS = {"alertname": 3.0, "service": 2.0}
_TOKEN = re.compile(r"[a-z_]+")


def similarity(
    labels_a: Mapping[str, str], summary_a: str, labels_b: Mapping[str, str], summary_b: str
) -> float:
    """How alike two alerts are, in [0, 1].

    ``0.7 * label similarity + 0.3 * description similarity``.  Label
    similarity is the weighted share of label names (union of both sets)
    whose values agree, weights in :data:`LABEL_WEIGHTS` (others 1); a
    different ``alertname`` makes it 0.  Description similarity is the Jaccard
    index of the lower-case word tokens, numbers ignored.

    >>> similarity({"alertname": "x", "region": "a"}, "x high", {"alertname": "x", "region": "b"}, "x high")
    0.825
    """
    if labels_a.get("alertname") != labels_b.get("alertname"):
        return 0.0
    names = set(labels_a) | set(labels_b)
    total = agree = 0.0
    for name in names:
        w = LABEL_WEIGHTS.get(name, 1.0)
        total += w
        if labels_a.get(name) == labels_b.get(name):
            agree += w
    label_sim = agree / total if total else 1.0
    ta, tb = set(_TOKEN.findall(summary_a.lower())), set(_TOKEN.findall(summary_b.lower()))
    text_sim = len(ta & tb) / len(ta | tb) if ta | tb else 1.0
    return 0.7 * label_sim + 0.3 * text_sim


class SimilarityIndex:
    """Find the most similar earlier alert fast: an inverted index of label pairs per alert name.

    :func:`similarity` of at least ``threshold`` needs the label similarity
    to reach ``(threshold - 0.3) / 0.7`` (the description adds at most 0.3),
    and the label similarity is at most the weight an earlier alert agrees
    on, divided by the weight of the new alert's labels.  So only earlier
    alerts with the same ``alertname`` that share enough ``(name, value)``
    pairs are compared in full; the result is the same as comparing with
    every earlier alert.

    Parameters
    ----------
    last_ms : callable
        Gives an indexed object's last time (compared with the dedup window).

    Notes
    -----
    Among equally similar alerts the one indexed first wins.
    """

    def __init__(self, last_ms: Callable[[Any], int]) -> None:
        self.last_ms = last_ms
        self._items: dict[str, tuple[int, Mapping[str, str], str, Any]] = {}
        # (alertname, (label name, value)) -> keys, in insertion order
        self._postings: dict[tuple[str | None, tuple[str, str]], dict[str, None]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: str, labels: Mapping[str, str], summary: str, obj: Any) -> None:
        """Index ``obj`` under ``key`` (replacing an entry with that key)."""
        self.discard(key)
        self._seq += 1
        self._items[key] = (self._seq, dict(labels), summary, obj)
        name = labels.get("alertname")
        for pair in labels.items():
            self._postings.setdefault((name, pair), {})[key] = None

    def discard(self, key: str) -> None:
        """Drop ``key`` when indexed."""
        item = self._items.pop(key, None)
        if item is None:
            return
        name = item[1].get("alertname")
        for pair in item[1].items():
            post = self._postings.get((name, pair))
            if post is not None:
                post.pop(key, None)
                if not post:
                    del self._postings[(name, pair)]

    def best(
        self,
        labels: Mapping[str, str],
        summary: str,
        start_ms: int,
        window_ms: int,
        threshold: float,
    ) -> Any | None:
        """The indexed object most similar to the alert (at least ``threshold``), seen within the window."""
        name = labels.get("alertname")
        if name is None:
            return None
        need = (threshold - 0.3) / 0.7
        if need <= 0:
            candidates = list(self._postings.get((name, ("alertname", name)), ()))
        else:
            # every candidate agrees on alertname; weight-1 labels are counted
            # by Counter.update (a C loop), heavier ones one by one
            own = sum(LABEL_WEIGHTS.get(k, 1.0) for k in labels)
            floor = need * own - LABEL_WEIGHTS.get("alertname", 1.0) - 1e-9
            if floor <= 0:
                candidates = list(self._postings.get((name, ("alertname", name)), ()))
            else:
                counts: Counter[str] = Counter()
                heavy: dict[str, float] = {}
                for pair in labels.items():
                    post = self._postings.get((name, pair))
                    if not post or pair[0] == "alertname":
                        continue
                    w = LABEL_WEIGHTS.get(pair[0], 1.0)
                    if w == 1.0:
                        counts.update(iter(post))
                    else:
                        for key in post:
                            heavy[key] = heavy.get(key, 0.0) + w
                for key, w in heavy.items():
                    counts[key] += w  # type: ignore[assignment]
                candidates = [k for k, w in counts.items() if w >= floor]
        found, found_sim, found_seq = None, threshold, 0
        for key in candidates:
            seq, other, other_summary, obj = self._items[key]
            if start_ms - self.last_ms(obj) > window_ms:
                continue
            sim = similarity(labels, summary, other, other_summary)
            if sim > found_sim or (sim == found_sim and (found is None or seq < found_seq)):
                found, found_sim, found_seq = obj, sim, seq
        return found

    def prune(self, now_ms: int, window_ms: int) -> int:
        """Drop entries last seen more than ``window_ms`` before ``now_ms``; return how many."""
        old = [k for k, it in self._items.items() if now_ms - self.last_ms(it[3]) > window_ms]
        for key in old:
            self.discard(key)
        return len(old)


class AlertBook:
    """Alerts raised so far, with 15-minute deduplication.

    Parameters
    ----------
    dedup_window_ms : int
        A repeat within this time of an alert's last occurrence is folded.
    similarity_threshold : float, optional
        Also fold an alert into an active one whose :func:`similarity` is at
        least this (0.8 by default in the config); the folded alert's
        fingerprint joins the active one's ``members``.  None folds exact
        fingerprints only.
    """

    def __init__(
        self, dedup_window_ms: int = 900_000, similarity_threshold: float | None = None
    ) -> None:
        self.dedup_window_ms = int(dedup_window_ms)
        self.similarity_threshold = similarity_threshold
        self.alerts: list[Alert] = []
        self._last: dict[str, Alert] = {}
        self.folded = 0
        self.folded_by_similarity = 0
        self._index: SimilarityIndex | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_index"] = None  # rebuilt on first use; holds a lambda
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_index", None)

    def _similar(self, labels: Mapping[str, str], summary: str, start_ms: int) -> Alert | None:
        if self.similarity_threshold is None:
            return None
        if self._index is None or len(self._index) != len(self.alerts):
            # built on first use, and again if alerts were added to the list directly
            self._index = SimilarityIndex(lambda a: a.end_ms)
            for alert in self.alerts:
                self._index.add(alert.fingerprint + f"#{id(alert)}", alert.labels, alert.summary, alert)
        return self._index.best(
            labels, summary, start_ms, self.dedup_window_ms, self.similarity_threshold
        )

    def raise_alert(
        self,
        labels: Mapping[str, str],
        start_ms: int,
        end_ms: int,
        score: float,
        summary: str,
        *,
        breadth: int = 1,
        weight: float = 1.0,
        incident_id: int | None = None,
    ) -> tuple[Alert, bool]:
        """Record an occurrence; return the alert and whether it is new."""
        fp = fingerprint(labels)
        sev = severity(score, end_ms - start_ms, breadth, weight)
        prev = self._last.get(fp)
        if prev is None or start_ms - prev.end_ms > self.dedup_window_ms:
            prev = self._similar(labels, summary, start_ms)
            if prev is not None:
                prev.members.add(fp)
                self._last[fp] = prev
                self.folded_by_similarity += 1
        if prev is not None and start_ms - prev.end_ms <= self.dedup_window_ms:
            prev.count += 1
            prev.end_ms = max(prev.end_ms, end_ms)
            prev.score = max(prev.score, score)
            prev.severity = max(prev.severity, sev)
            self.folded += 1
            logger.debug("alert folded: fingerprint=%s into %s count=%d", fp, prev.fingerprint, prev.count)
            return prev, False
        alert = Alert(
            fingerprint=fp,
            labels=dict(labels),
            start_ms=int(start_ms),
            end_ms=int(end_ms),
            severity=sev,
            score=float(score) if math.isfinite(score) else 1.0,
            summary=summary,
            incident_id=incident_id,
        )
        self.alerts.append(alert)
        self._last[fp] = alert
        if self._index is not None:
            self._index.add(fp + f"#{id(alert)}", alert.labels, alert.summary, alert)
        logger.info("alert raised: fingerprint=%s severity=%.2f %s", fp, sev, summary)
        return alert, True
