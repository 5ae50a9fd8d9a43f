"""Incident history: diagnosed incidents kept on disk and matched against new ones.

Each diagnosed incident is one JSON line of ``incidents.jsonl`` in the data
directory: when it started, its symptoms (the features of
:func:`obscore.diagnose.patterns.symptoms` per affected service), the cause
(service and metric), the resolution steps, the confidence, and whether a
person confirmed the cause.  A new incident is compared with every stored
one by :func:`similarity` of the symptoms of the stored incident's cause
service, then and now (victims vary from one incident to the next, the
cause's own symptoms much less); a stored incident that matches at
``min_similarity`` or above, and whose cause is trusted (confirmed, or
diagnosed at the action threshold), is evidence for the same cause in the
new incident (the ``history`` likelihood of :mod:`obscore.diagnose.rca`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

#: A past incident matches a new one at this similarity or above (of its cause
#: service's symptoms; incidents of one kind share about half of them on the
#: simulator, as victims and onset order vary).
MATCH_SIMILARITY = 0.5

#: A stored diagnosis whose confidence reached this is trusted as a cause.
TRUSTED_CONFIDENCE = 0.8


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One diagnosed incident as stored.

    Attributes
    ----------
    key : str
        Identifies the incident across runs (start time and services); a
        later record with the same key replaces the earlier one.
    start_ms : int
        When the incident started.
    symptoms : dict of str to dict of str to float
        Per affected service, its symptom features.
    cause_service, cause_metric : str
        The diagnosed (or confirmed) cause.
    resolution : list of str
        The steps that resolved it (the matched pattern's, or a person's).
    confidence : float
        The posterior of the cause when it was diagnosed.
    confirmed : bool
        A person confirmed (or corrected) the cause.
    """

    key: str
    start_ms: int
    symptoms: dict[str, dict[str, float]]
    cause_service: str
    cause_metric: str
    resolution: list[str] = field(default_factory=list)
    confidence: float = 0.0
    confirmed: bool = False

    @property
    def trusted(self) -> bool:
        """Confirmed, or diagnosed at :data:`TRUSTED_CONFIDENCE` or above."""
        return self.confirmed or self.confidence >= TRUSTED_CONFIDENCE


def incident_key(incident) -> str:
    """``<start_ms>:<services, comma-separated>`` of a pipeline incident."""
    return f"{int(incident.start_ms)}:{','.join(sorted(incident.services))}"


def _flatten(symptoms: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {
        f"{svc}|{feat}": float(v)
        for svc, feats in symptoms.items()
        for feat, v in feats.items()
        if v
    }


def similarity(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]]) -> float:
    """Weighted Jaccard similarity of two incidents' symptoms, in [0, 1].

    Features are compared per service (``"<service>|<feature>"``): the sum
    of the smaller values over the sum of the larger ones.  Two incidents
    without any symptom have similarity 0.
    """
    fa, fb = _flatten(a), _flatten(b)
    keys = fa.keys() | fb.keys()
    top = sum(max(fa.get(k, 0.0), fb.get(k, 0.0)) for k in keys)
    if top <= 0.0:
        return 0.0
    return sum(min(fa.get(k, 0.0), fb.get(k, 0.0)) for k in keys) / top


class IncidentHistory:
    """Diagnosed incidents in a JSON-lines file.

    Parameters
    ----------
    path : str or Path
        The file; created (with its folder) on the first :meth:`record`.
        A missing file is an empty history.

    Notes
    -----
    Lines that are not a valid record are skipped with a warning naming
    the file and line, so one damaged line does not lose the rest.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._records: dict[str, IncidentRecord] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line)
                    rec = IncidentRecord(
                        key=str(raw["key"]),
                        start_ms=int(raw["start_ms"]),
                        symptoms={
                            str(s): {str(k): float(v) for k, v in f.items()}
                            for s, f in raw["symptoms"].items()
                        },
                        cause_service=str(raw["cause_service"]),
                        cause_metric=str(raw["cause_metric"]),
                        resolution=[str(x) for x in raw.get("resolution", [])],
                        confidence=float(raw.get("confidence", 0.0)),
                        confirmed=bool(raw.get("confirmed", False)),
                    )
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    logger.warning("incident history %s, line %d skipped: %s", self.path, n, exc)
                    continue
                self._records[rec.key] = rec

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self):
        return iter(list(self._records.values()))

    def get(self, key: str) -> IncidentRecord | None:
        """The record stored under ``key``, or None."""
        return self._records.get(key)

    def record(self, rec: IncidentRecord) -> None:
        """Store ``rec`` (replacing a record with its key) and append it to the file.

        The file is append-only; on reading, the last line of a key wins.
        A record equal to the stored one is not written again, and a
        confirmed record is never replaced by an unconfirmed one.
        """
        old = self._records.get(rec.key)
        if old == rec or (old is not None and old.confirmed and not rec.confirmed):
            return  # nothing new (a page shown twice), or a person's word kept
        self._records[rec.key] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(rec), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def confirm(self, key: str, service: str, metric: str, resolution: Iterable[str] = ()) -> IncidentRecord:
        """Mark the cause of incident ``key`` as confirmed (or corrected) by a person.

        Raises
        ------
        KeyError
            If no incident is stored under ``key``.
        """
        old = self._records.get(key)
        if old is None:
            raise KeyError(f"incident history {self.path}: no incident {key!r}")
        steps = list(resolution) or old.resolution
        rec = IncidentRecord(old.key, old.start_ms, old.symptoms, service, metric, steps, old.confidence, True)
        self.record(rec)
        return rec

    def matches(
        self,
        symptoms: Mapping[str, Mapping[str, float]],
        *,
        exclude: str | None = None,
        min_similarity: float = MATCH_SIMILARITY,
    ) -> list[tuple[IncidentRecord, float]]:
        """Trusted past incidents at ``min_similarity`` or above, most similar first.

        The similarity is that of the symptoms of the past incident's cause
        service, in it and in ``symptoms``.

        ``exclude`` is the key of the incident being diagnosed, so it does
        not match itself.
        """
        out = []
        for rec in self._records.values():
            if rec.key == exclude or not rec.trusted:
                continue
            svc = rec.cause_service
            sim = similarity({svc: symptoms.get(svc, {})}, {svc: rec.symptoms.get(svc, {})})
            if sim >= min_similarity:
                out.append((rec, sim))
        out.sort(key=lambda rs: rs[1], reverse=True)
        return out

    def evidence(
        self,
        symptoms: Mapping[str, Mapping[str, float]],
        *,
        exclude: str | None = None,
        min_similarity: float = MATCH_SIMILARITY,
    ) -> list[tuple[str, str, float]]:
        """``(service, metric, similarity)`` of the matches, as :func:`~obscore.diagnose.rca.diagnose` takes."""
        return [
            (rec.cause_service, rec.cause_metric, sim)
            for rec, sim in self.matches(symptoms, exclude=exclude, min_similarity=min_similarity)
        ]


def incident_symptoms(
    incident,
    signals: Mapping[str, object],
    dependencies: Mapping[str, list[str] | tuple[str, ...]] | None = None,
    changes: Mapping[str, list[str] | tuple[str, ...]] | None = None,
) -> dict[str, dict[str, float]]:
    """Per affected service of a pipeline incident, its symptom features.

    The features of :func:`obscore.diagnose.patterns.symptoms`, without
    zero values; services without any feature are left out.
    """
    from obscore.diagnose.patterns import symptoms

    changes = changes or {}
    out: dict[str, dict[str, float]] = {}
    services = sorted({a.labels.get("service") for a in incident.anomalies} - {None})
    for svc in services:
        feats = symptoms(svc, incident.anomalies, signals, dependencies, changes.get(svc, ()))
        feats = {k: float(v) for k, v in feats.items() if v}
        if feats:
            out[svc] = feats
    return out


def record_diagnosis(history: IncidentHistory, incident, diagnosis, symptoms: Mapping[str, Mapping[str, float]]) -> IncidentRecord | None:
    """Store a diagnosed incident under :func:`incident_key`; None when it has no candidate.

    The cause is the top candidate; the resolution its pattern's steps.  A
    record a person confirmed is kept as it is.
    """
    top = diagnosis.top
    if top is None:
        return None
    rec = IncidentRecord(
        key=incident_key(incident),
        start_ms=int(incident.start_ms),
        symptoms={s: dict(f) for s, f in symptoms.items()},
        cause_service=top.service,
        cause_metric=top.metric,
        resolution=list(top.steps),
        confidence=float(top.confidence),
    )
    history.record(rec)
    return history.get(rec.key)
