"""Escalation: page the next level when nobody acknowledges an alert in time.

A policy lists levels, each a receiver and a delay.  When an alert the policy
matches starts firing, level 0 is paged; if the alert is still firing and
unacknowledged ``delay`` after a level was paged, the next level is paged.
An acknowledgement, or the alert's resolution, stops the escalation.  The
first policy whose matchers (and ``min_severity``) fit an alert applies.

Policies come from the config::

    [[escalation.policies]]
    name = "web"
    matchers = ['service=~"gateway|auth"']
    min_severity = 0.5
    levels = [
      { receiver = "web-oncall", delay = "10m" },
      { receiver = "web-lead", delay = "20m" },
      { receiver = "cto" },
    ]

Acknowledgements are appended to ``acks.jsonl`` in the alert state
directory (by the API and by ``obscore ack``) and read back on every tick,
so a running server sees an ``obscore ack`` from the command line; the
levels reached are saved in ``escalations.json``.  A restart pages nobody
twice: a level is recorded as paged before the page is sent.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from obscore.alert.route import Matcher, parse_matchers
from obscore.alert.state import StateDir
from obscore.durations import parse_duration
from obscore.errors import ConfigError

logger = logging.getLogger(__name__)

ACKS_FILE = "acks.jsonl"
STATE_PART = "escalations"


@dataclass(frozen=True, slots=True)
class Level:
    """One step of a policy: who is paged, and how long they have to acknowledge."""

    receiver: str
    delay_ms: int | None  # None on the last level: nobody comes after it


@dataclass(frozen=True, slots=True)
class Escalation:
    """A policy: which alerts it covers and its levels, in order."""

    name: str
    levels: tuple[Level, ...]
    matchers: tuple[Matcher, ...] = ()
    min_severity: float = 0.0

    def covers(self, labels: Mapping[str, str], severity: float) -> bool:
        return severity >= self.min_severity and all(
            m.matches(labels) for m in self.matchers
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One level of one alert paged."""

    fingerprint: str
    policy: str
    level: int
    receiver: str
    at_ms: int
    labels: dict[str, str] = field(default_factory=dict)
    summary: str = ""


@dataclass(slots=True)
class _Track:
    """Where one alert's escalation stands."""

    policy: str
    labels: dict[str, str]
    summary: str
    level: int  # last level paged
    paged_ms: int  # when it was paged
    state: str = "escalating"  # escalating, acknowledged, resolved, exhausted
    acked_by: str = ""
    acked_ms: int | None = None
    comment: str = ""


def policies_from_config(raw: Mapping[str, Any]) -> list[Escalation]:
    """The ``[[escalation.policies]]`` of a raw config.

    Raises
    ------
    ConfigError
        Naming the policy, the level and the key that is wrong.
    """
    table = raw.get("escalation", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"escalation: expected a table, got {type(table).__name__}")
    out = []
    for i, p in enumerate(table.get("policies", [])):
        where = f"escalation.policies[{i}]"
        if not isinstance(p, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(p).__name__}")
        name = p.get("name", f"policy-{i}")
        levels_raw = p.get("levels")
        if not isinstance(levels_raw, list) or not levels_raw:
            raise ConfigError(f"{where} ({name!r}): 'levels' must be a non-empty list")
        levels = []
        for k, lv in enumerate(levels_raw):
            at = f"{where}.levels[{k}]"
            if (
                not isinstance(lv, Mapping)
                or not isinstance(lv.get("receiver"), str)
                or not lv["receiver"]
            ):
                raise ConfigError(f"{at}: needs a string 'receiver'")
            last = k == len(levels_raw) - 1
            if "delay" not in lv and not last:
                raise ConfigError(
                    f"{at}: needs a 'delay' before the next level is paged, e.g. '15m'"
                )
            try:
                delay = parse_duration(lv["delay"]) if "delay" in lv else None
            except ConfigError as exc:
                raise ConfigError(f"{at}.delay: {exc}") from None
            levels.append(Level(lv["receiver"], None if last else delay))
        try:
            matchers = parse_matchers(p.get("matchers"))
        except ConfigError as exc:
            raise ConfigError(f"{where}.matchers: {exc}") from None
        sev = p.get("min_severity", 0.0)
        if (
            isinstance(sev, bool)
            or not isinstance(sev, (int, float))
            or not 0 <= sev <= 1
        ):
            raise ConfigError(
                f"{where}.min_severity: expected a number in [0, 1], got {sev!r}"
            )
        out.append(Escalation(str(name), tuple(levels), matchers, float(sev)))
    return out


def append_ack(
    state_dir: Path, fingerprint: str, by: str, comment: str, at_ms: int
) -> None:
    """Append an acknowledgement to ``acks.jsonl`` (synced before returning)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {"fingerprint": fingerprint, "by": by, "comment": comment, "at_ms": at_ms}
    )
    with open(state_dir / ACKS_FILE, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class Escalator:
    """Track firing alerts through their policy's levels.

    Parameters
    ----------
    policies : iterable of Escalation
        Tried in order; the first that covers an alert applies.
    send : callable, optional
        Called with each :class:`Page` (after it is recorded); a failing
        ``send`` is logged and not retried, since the level counts as paged.
    state_dir : Path, optional
        Alert state directory: ``acks.jsonl`` is read from it and
        ``escalations.json`` saved in it.  None keeps everything in memory.
    """

    def __init__(
        self,
        policies: Iterable[Escalation],
        send: Callable[[Page], None] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.policies = {p.name: p for p in policies}
        self.send = send
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.tracks: dict[str, _Track] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        self.pages: deque[Page] = deque(maxlen=1000)  # the latest, for a look
        self._acks_offset = 0
        if self.state_dir is not None:
            saved = StateDir(self.state_dir).load(STATE_PART, {})
            self.tracks = {fp: _Track(**t) for fp, t in saved.get("tracks", {}).items()}
            self.read_acks()

    # --- in ---------------------------------------------------------------------

    def policy_for(
        self, labels: Mapping[str, str], severity: float
    ) -> Escalation | None:
        return next(
            (p for p in self.policies.values() if p.covers(labels, severity)), None
        )

    def fire(
        self,
        fingerprint: str,
        labels: Mapping[str, str],
        severity: float,
        summary: str,
        now_ms: int,
    ) -> Page | None:
        """An alert is firing: start its escalation (level 0) unless it is tracked already."""
        if fingerprint in self.tracks and self.tracks[fingerprint].state != "resolved":
            return None
        policy = self.policy_for(labels, severity)
        if policy is None:
            return None
        track = _Track(policy.name, dict(labels), summary, 0, now_ms)
        self.tracks[fingerprint] = track
        return self._page(fingerprint, track, now_ms)

    def resolve(self, fingerprint: str, now_ms: int) -> None:
        """The alert stopped firing: no further level is paged."""
        track = self.tracks.get(fingerprint)
        if track is not None and track.state in ("escalating", "exhausted"):
            track.state = "resolved"
            logger.info(
                "escalation ended: fingerprint=%s resolved at level %d",
                fingerprint,
                track.level,
            )

    def acknowledge(self, fingerprint: str, by: str, comment: str, now_ms: int) -> None:
        """Stop the escalation of an alert; kept in ``acks.jsonl`` when there is a state directory."""
        if not by:
            raise ValueError("an acknowledgement needs who gives it ('by')")
        if self.state_dir is not None:
            append_ack(self.state_dir, fingerprint, by, comment, now_ms)
            self.read_acks()
        else:
            self._apply_ack(
                {
                    "fingerprint": fingerprint,
                    "by": by,
                    "comment": comment,
                    "at_ms": now_ms,
                }
            )

    def read_acks(self) -> int:
        """Apply the acknowledgements appended to ``acks.jsonl`` since the last read."""
        if self.state_dir is None:
            return 0
        path = self.state_dir / ACKS_FILE
        if not path.exists():
            return 0
        n = 0
        with open(path, encoding="utf-8") as fh:
            fh.seek(self._acks_offset)
            for line in fh:
                if not line.endswith("\n"):
                    break  # a line still being written: read it next time
                self._acks_offset += len(line.encode("utf-8"))
                try:
                    ack = json.loads(line)
                    self._apply_ack(ack)
                    n += 1
                except (ValueError, KeyError, TypeError):
                    logger.warning(
                        "%s: skipped a line that is not an acknowledgement: %r",
                        path,
                        line[:80],
                    )
        return n

    def _apply_ack(self, ack: Mapping[str, Any]) -> None:
        fp = str(ack["fingerprint"])
        self.acks[fp] = {
            "by": str(ack["by"]),
            "comment": str(ack.get("comment", "")),
            "at_ms": int(ack["at_ms"]),
        }
        track = self.tracks.get(fp)
        if track is not None and track.state in ("escalating", "exhausted"):
            track.state = "acknowledged"
            track.acked_by, track.acked_ms = self.acks[fp]["by"], self.acks[fp]["at_ms"]
            track.comment = self.acks[fp]["comment"]
            logger.info(
                "escalation stopped: fingerprint=%s acknowledged by %s at level %d",
                fp,
                track.acked_by,
                track.level,
            )

    # --- time -------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Page]:
        """Page the next level of every alert whose level's delay ran out unacknowledged."""
        self.read_acks()
        pages = []
        for fp, track in self.tracks.items():
            if track.state != "escalating":
                continue
            policy = self.policies.get(track.policy)
            if policy is None:
                continue
            delay = policy.levels[track.level].delay_ms
            # several levels may be due after a long pause (or a restart): page each
            while delay is not None and now_ms >= track.paged_ms + delay:
                due = track.paged_ms + delay
                track.level += 1
                page = self._page(fp, track, due)
                if page is not None:
                    pages.append(page)
                delay = policy.levels[track.level].delay_ms
            if delay is None and track.state == "escalating":
                track.state = "exhausted"
        self.save()
        return pages

    def _page(self, fingerprint: str, track: _Track, at_ms: int) -> Page | None:
        policy = self.policies[track.policy]
        level = policy.levels[track.level]
        track.paged_ms = at_ms
        page = Page(
            fingerprint,
            policy.name,
            track.level,
            level.receiver,
            at_ms,
            dict(track.labels),
            track.summary,
        )
        self.pages.append(page)
        self.save()  # recorded before it is sent: a crash after the send pages nobody twice
        logger.warning(
            "escalation page: fingerprint=%s policy=%s level=%d receiver=%s",
            fingerprint,
            policy.name,
            track.level,
            level.receiver,
        )
        if self.send is not None:
            try:
                self.send(page)
            except Exception:
                logger.exception(
                    "escalation page to %s failed: fingerprint=%s",
                    level.receiver,
                    fingerprint,
                )
        return page

    # --- state ----------------------------------------------------------------------

    def save(self) -> None:
        if self.state_dir is not None:
            StateDir(self.state_dir).save(
                STATE_PART, {"tracks": {fp: asdict(t) for fp, t in self.tracks.items()}}
            )

    def status(self) -> list[dict[str, Any]]:
        """Each tracked alert: policy, level paged, its receiver, state and acknowledgement."""
        out = []
        for fp, t in sorted(self.tracks.items(), key=lambda kv: kv[1].paged_ms):
            policy = self.policies.get(t.policy)
            receiver = policy.levels[t.level].receiver if policy else None
            out.append(
                {
                    "fingerprint": fp,
                    "policy": t.policy,
                    "level": t.level,
                    "receiver": receiver,
                    "paged_ms": t.paged_ms,
                    "state": t.state,
                    "acknowledged_by": t.acked_by or None,
                    "acknowledged_ms": t.acked_ms,
                    "labels": t.labels,
                    "summary": t.summary,
                }
            )
        return out
