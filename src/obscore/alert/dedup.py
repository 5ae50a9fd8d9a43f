"""Turn anomalies into alerts and fold repeats of the same alert.

An alert is identified by its fingerprint, a stable hex hash of its label
set.  A new alert whose fingerprint fired within the dedup window (15m by
default) of the last one is folded into it: the count grows and the end moves
forward, but no new alert is raised.  With a similarity threshold, an alert
whose label set and description are similar enough to any alert already
folded into an active one (its representative or a member) folds into it
too, and is kept as a :class:`Member` with its own activity range.
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
class Member:
    """An alert folded by similarity into another: what it was and when it was active.

    ``end_ms`` moves forward with each repeat, so a member's resolution is
    known on its own even while the alert it folded into still fires.
    """

    labels: dict[str, str]
    summary: str
    start_ms: int
    end_ms: int
    count: int = 1
    incident_id: int | None = None


@dataclass(slots=True)
class Alert:
    """One alert, possibly folding several repeats of the same fingerprint.

    ``members`` maps the fingerprint of each alert folded in by similarity to
    its :class:`Member`; the alert's own ``end_ms`` is the latest end of all.
    """

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
    members: dict[str, Member] = field(default_factory=dict)

    @property
    def is_severe(self) -> bool:
        return self.severity > 0.7

    @property
    def incident_ids(self) -> set[int]:
        """The incidents of the alert and of every member folded into it."""
        ids = {m.incident_id for m in self.members.values()}
        ids.add(self.incident_id)
        ids.discard(None)
        return ids  # type: ignore[return-value]

    def firing_members(self, now_ms: int) -> list[str]:
        """Fingerprints of the members still active at ``now_ms``."""
        return [fp for fp, m in self.members.items() if m.end_ms > now_ms]


#: Label weights of the similarity measure.  The alert name says what is wrong
#: (it must agree, and its weight is how much a shared symptom counts); every
#: other label (service, region, host, ...) says where it shows, and one
#: problem spreads across places, so each weighs 1.
# NOTE: service used to weigh 2: then request_latency of db and of gateway at
# the same minute stayed apart (0.77 < 0.8), and similarity folded only what
# grouping by alertname and service already bundles; on the demo day (seed 0)
# the slow_db incident got 33 notifications either way, 12 with weight 1
# (tests/alert/test_demo_dedup.py).
LABEL_WEIGHTS = {"alertname": 3.0}
_TOKEN = re.compile(r"[a-z_]+")
#: Slack of the threshold test: ``0.7 * 5 / 7 + 0.3`` is 0.7999999999999999 in
#: floating point, and an alert that differs in one label of weight 2 out of 7
#: with the same words is meant to reach 0.8.
SIMILARITY_EPS = 1e-9


def _label_tokens(labels: Mapping[str, str]) -> set[str]:
    out: set[str] = set()
    for name, value in labels.items():
        out.update(_TOKEN.findall(name.lower()))
        out.update(_TOKEN.findall(value.lower()))
    return out


def description_words(summary: str, labels: Mapping[str, str]) -> frozenset[str]:
    """The words a description adds to its alert's labels (lower case, numbers dropped).

    >>> sorted(description_words('error_rate{service="db"} above range', {"service": "db"}))
    ['above', 'error_rate', 'range']
    """
    return frozenset(_TOKEN.findall(summary.lower())) - _label_tokens(labels)


def _similarity(
    labels_a: Mapping[str, str],
    pairs_a: frozenset[tuple[str, str]],
    words_a: frozenset[str],
    labels_b: Mapping[str, str],
    pairs_b: frozenset[tuple[str, str]],
    words_b: frozenset[str],
) -> float:
    # pairs_* are the label sets as (name, value) pairs: the weight-1 labels
    # agree on the pairs both hold, counted by one set intersection
    if labels_a.get("alertname") != labels_b.get("alertname"):
        return 0.0
    agree = float(len(pairs_a & pairs_b))
    total = float(len(labels_a) + len(labels_b) - len(labels_a.keys() & labels_b.keys()))
    for name, w in LABEL_WEIGHTS.items():
        if name in labels_a or name in labels_b:
            total += w - 1.0
            if labels_a.get(name) == labels_b.get(name):
                agree += w - 1.0
    label_sim = agree / total if total else 1.0
    union = words_a | words_b
    text_sim = len(words_a & words_b) / len(union) if union else 1.0
    return 0.7 * label_sim + 0.3 * text_sim


def similarity(
    labels_a: Mapping[str, str], summary_a: str, labels_b: Mapping[str, str], summary_b: str
) -> float:
    """How alike two alerts are, in [0, 1].

    ``0.7 * label similarity + 0.3 * description similarity``.  Label
    similarity is the weighted share of label names (union of both sets)
    whose values agree, weights in :data:`LABEL_WEIGHTS` (others 1); a
    different ``alertname`` makes it 0.  Description similarity is the Jaccard
    index of the lower-case words of the descriptions, numbers ignored, each
    without the words that spell its own labels (:func:`description_words`):
    a label that differs is counted once, in the label part, and not a
    second time because the description repeats it.

    >>> similarity({"alertname": "x", "region": "a"}, "x high", {"alertname": "x", "region": "b"}, "x high")
    0.825
    """
    return _similarity(
        labels_a,
        frozenset(labels_a.items()),
        description_words(summary_a, labels_a),
        labels_b,
        frozenset(labels_b.items()),
        description_words(summary_b, labels_b),
    )


class SimilarityIndex:
    """Find the most similar earlier alert fast: an inverted index of label pairs per alert name.

    :func:`similarity` of at least ``threshold`` needs the label similarity
    to reach ``(threshold - 0.3) / 0.7`` (the description adds at most 0.3),
    and the label similarity is at most the weight an earlier alert agrees
    on, divided by the weight of the new alert's labels.  So only earlier
    alerts with the same ``alertname`` that share enough ``(name, value)``
    pairs are compared in full; the result is the same as comparing with
    every earlier alert.  Each entry keeps its description words
    (:func:`description_words`), so they are split once, not per comparison.

    Parameters
    ----------
    last_ms : callable
        Gives an indexed object's last time (compared with the dedup window).

    Notes
    -----
    Among equally similar alerts the one indexed first wins.  Several keys
    may index the same object (an alert and the members folded into it), so
    a new alert finds the object through whichever of them it is closest to.
    """

    def __init__(self, last_ms: Callable[[Any], int]) -> None:
        self.last_ms = last_ms
        # key -> (sequence, labels, label pairs, description words, object)
        self._items: dict[
            str,
            tuple[int, Mapping[str, str], frozenset[tuple[str, str]], frozenset[str], Any],
        ] = {}
        # (alertname, (label name, value)) -> keys, in insertion order
        self._postings: dict[tuple[str | None, tuple[str, str]], dict[str, None]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, key: str, labels: Mapping[str, str], summary: str, obj: Any) -> None:
        """Index ``obj`` under ``key`` (replacing an entry with that key)."""
        self.discard(key)
        self._seq += 1
        labels = dict(labels)
        self._items[key] = (
            self._seq,
            labels,
            frozenset(labels.items()),
            description_words(summary, labels),
            obj,
        )
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
        threshold -= SIMILARITY_EPS
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
        words = description_words(summary, labels)
        pairs = frozenset(labels.items())
        for key in candidates:
            seq, other, other_pairs, other_words, obj = self._items[key]
            if start_ms - self.last_ms(obj) > window_ms:
                continue
            sim = _similarity(labels, pairs, words, other, other_pairs, other_words)
            if sim > found_sim or (sim == found_sim and (found is None or seq < found_seq)):
                found, found_sim, found_seq = obj, sim, seq
        return found

    def prune(self, now_ms: int, window_ms: int) -> int:
        """Drop entries last seen more than ``window_ms`` before ``now_ms``; return how many."""
        old = [k for k, it in self._items.items() if now_ms - self.last_ms(it[4]) > window_ms]
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
        Also fold an alert into an active one when its :func:`similarity` to
        that alert, or to any member already folded into it, is at least this
        (0.8 by default in the config); the folded alert joins the active
        one's ``members`` with its own labels and activity range.  None folds
        exact fingerprints only.

    Notes
    -----
    Comparing with every member, not only with the first alert, lets one
    problem that spreads (a symptom moving from region to region, then from
    service to service) stay one alert, each step similar to the one before;
    the window bounds the chain, since an alert is only found while its last
    occurrence is within ``dedup_window_ms``.
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
        self._indexed = 0  # how many of self.alerts the index holds

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_index"] = None  # rebuilt on first use; holds a lambda
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__["_index"] = None
        self.__dict__["_indexed"] = 0
        for alert in self.alerts:
            if isinstance(alert.members, set):  # pickled before members had ranges
                alert.members = {
                    fp: Member({}, "", alert.start_ms, alert.end_ms) for fp in alert.members
                }

    def _add_to_index(self, alert: Alert, fp: str, labels: Mapping[str, str], summary: str) -> None:
        assert self._index is not None
        if labels:
            self._index.add(f"{fp}#{id(alert)}", labels, summary, alert)

    def _similar(self, labels: Mapping[str, str], summary: str, start_ms: int) -> Alert | None:
        if self.similarity_threshold is None:
            return None
        if self._index is None or self._indexed != len(self.alerts):
            # built on first use, and again if alerts were added to the list directly
            self._index = SimilarityIndex(lambda a: a.end_ms)
            for alert in self.alerts:
                self._add_to_index(alert, alert.fingerprint, alert.labels, alert.summary)
                for fp, m in alert.members.items():
                    self._add_to_index(alert, fp, m.labels, m.summary)
            self._indexed = len(self.alerts)
        return self._index.best(
            labels, summary, start_ms, self.dedup_window_ms, self.similarity_threshold
        )

    def forget(self, old: Callable[[Alert], bool]) -> int:
        """Drop the alerts that ``old`` picks, as a long run sheds its history.

        Only alerts that no repeat can fold into any more should be picked
        (ended more than the dedup window before anything still to come);
        the similarity index is rebuilt without them on its next use.

        Returns
        -------
        int
            How many alerts were dropped.
        """
        kept = [al for al in self.alerts if not old(al)]
        dropped = len(self.alerts) - len(kept)
        if dropped:
            alive = {id(al) for al in kept}
            self.alerts = kept
            self._last = {fp: al for fp, al in self._last.items() if id(al) in alive}
            self._index, self._indexed = None, 0
        return dropped

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
        window = self.dedup_window_ms
        if prev is None or start_ms - prev.end_ms > window:
            prev = self._similar(labels, summary, start_ms)
            if prev is not None and prev.fingerprint != fp:
                member = Member(dict(labels), summary, int(start_ms), int(end_ms), 0, incident_id)
                prev.members[fp] = member
                self._add_to_index(prev, fp, member.labels, summary)
                self._last[fp] = prev
                self.folded_by_similarity += 1
                logger.debug("alert folded by similarity: fingerprint=%s into %s", fp, prev.fingerprint)
        if prev is not None and start_ms - prev.end_ms <= window:
            prev.count += 1
            prev.end_ms = max(prev.end_ms, end_ms)
            prev.score = max(prev.score, score)
            prev.severity = max(prev.severity, sev)
            member = prev.members.get(fp)
            if member is not None:
                member.count += 1
                member.end_ms = max(member.end_ms, int(end_ms))
                member.incident_id = incident_id
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
            self._add_to_index(alert, fp, alert.labels, alert.summary)
            self._indexed += 1
        logger.info("alert raised: fingerprint=%s severity=%.2f %s", fp, sev, summary)
        return alert, True
