"""Route alerts to receivers, group them, silence and inhibit them.

The router follows Alertmanager 0.25's semantics closely enough that one
Alertmanager configuration (its ``route``, ``receivers`` and ``inhibit_rules``
sections, parsed from YAML into dicts) drives both and yields the same
notifications; ``tests/alert/test_route_vs_alertmanager.py`` checks that
against a live Alertmanager.

Time is explicit: every call that changes state takes ``now_ms`` and the router
never reads a clock nor starts a thread.  Calls must come in time order; a
``now_ms`` older than one already seen is taken as the latest seen.

Lifecycle of an alert, in short:

- ``post`` stores the alert under its fingerprint (the last post wins, with
  Alertmanager's merge of overlapping activity ranges) and inserts it into one
  aggregation group per matching route.  An alert posted without an end is
  firing until ``resolve_timeout_ms`` after its last post.
- A group first flushes ``group_wait_ms`` after it was created (at once when
  its alert started more than ``group_wait_ms`` ago), then every
  ``group_interval_ms``.
- A flush drops silenced and inhibited alerts, then notifies the receiver when
  a firing alert is new since the last notification, when an alert resolved
  (with ``send_resolved``), when everything resolved, or when
  ``repeat_interval_ms`` passed.  Resolved alerts leave the group after the
  flush; an empty group is removed.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import heapq
import itertools
import json
import logging
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from obscore.alert.dedup import Alert, fingerprint
from obscore.durations import parse_duration
from obscore.errors import ConfigError, DroppedDataWarning

logger = logging.getLogger(__name__)

# Alertmanager's defaults (config.DefaultRouteOpts and global.resolve_timeout).
DEFAULT_GROUP_WAIT_MS = 30_000
DEFAULT_GROUP_INTERVAL_MS = 300_000
DEFAULT_REPEAT_INTERVAL_MS = 4 * 3_600_000
DEFAULT_RESOLVE_TIMEOUT_MS = 300_000

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


# --- time: RFC 3339 text <-> ms since the epoch ---


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d\d):(\d\d))\Z"
)
ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_rfc3339(text: str) -> int | None:
    """Milliseconds since the epoch from an RFC 3339 timestamp.

    Parameters
    ----------
    text : str
        ``2026-12-03T18:09:34.5Z`` or with an offset; fractions past the
        millisecond are truncated.  Go's zero time (year 1) and ``""`` mean
        "not set".

    Returns
    -------
    int or None
        Milliseconds, or None when the time is not set.

    Raises
    ------
    ValueError
        When the text is not an RFC 3339 timestamp.

    Examples
    --------
    >>> parse_rfc3339("1970-01-01T00:00:01.5Z")
    1500
    """
    if not text or text.startswith("0001-01-01"):
        return None
    m = _RFC3339.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = (m.group(7) or "") + "000"
    ms = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000 + int(frac[:3])
    if m.group(9):
        offset_ms = (int(m.group(10)) * 60 + int(m.group(11))) * 60_000
        ms -= offset_ms if m.group(9) == "+" else -offset_ms
    return ms


def format_rfc3339(ms: int | None) -> str:
    """RFC 3339 UTC text for a time in ms, trailing zeros of the fraction dropped.

    None gives Go's zero time, which Alertmanager writes for "no end".

    >>> format_rfc3339(1500)
    '1970-01-01T00:00:01.5Z'
    >>> format_rfc3339(None)
    '0001-01-01T00:00:00Z'
    """
    if ms is None:
        return ZERO_TIME
    sec, frac = divmod(int(ms), 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if frac:
        text += "." + f"{frac:03d}".rstrip("0")
    return text + "Z"


def _go_quote(value: str) -> str:
    # Go's %q for the printable text label values hold; json escapes agree.
    return json.dumps(value, ensure_ascii=False)


def format_labels(labels: Mapping[str, str]) -> str:
    """A label set as Alertmanager prints it: ``{a="1", b="2"}``, names sorted."""
    inner = ", ".join(f"{k}={_go_quote(labels[k])}" for k in sorted(labels))
    return "{" + inner + "}"


# --- matchers ---


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher: ``name op value`` with op ``=``, ``!=``, ``=~``, ``!~``.

    A missing label reads as the empty string, so ``team=""`` matches alerts
    without a ``team`` label.  Regular expressions are anchored at both ends.

    Parameters
    ----------
    name : str
        Label name.
    op : str
        ``"="``, ``"!="``, ``"=~"`` or ``"!~"``.
    value : str
        Value or regular expression.

    Notes
    -----
    Regular expressions run on Python's ``re``, not Go's RE2; the common
    syntax (alternation, classes, repetition) is the same, but look-arounds
    that ``re`` accepts would be refused by Alertmanager.
    """

    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ConfigError(
                f"matcher {self.name!r}: operator must be one of "
                f"'=', '!=', '=~', '!~', got {self.op!r}"
            )
        if self.op in ("=~", "!~"):
            try:
                regex = re.compile(self.value)
            except re.error as exc:
                raise ConfigError(
                    f"matcher {self.name!r}: {self.value!r} is not a regular "
                    f"expression ({exc})"
                ) from None
            object.__setattr__(self, "_regex", regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set satisfies this matcher."""
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = self._regex.fullmatch(v) is not None  # type: ignore[union-attr]
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{_go_quote(self.value)}"


_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*")


def _split_top_level(text: str) -> list[str]:
    # Split on commas that sit outside double quotes.
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return [p for p in (s.strip() for s in parts) if p]


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher written like ``severity="critical"`` or ``job=~"a|b"``.

    Raises
    ------
    ConfigError
        When the text is not a matcher.

    Examples
    --------
    >>> parse_matcher('job=~"api|db"').matches({"job": "db"})
    True
    """
    m = _MATCHER.match(text)
    if m is None:
        raise ConfigError(
            f"{text!r} is not a matcher; use e.g. 'severity=\"critical\"'"
        )
    raw = text[m.end() :].strip()
    if raw.startswith('"'):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(f"{text!r}: the quoted value is not closed") from None
        if not isinstance(value, str):
            raise ConfigError(f"{text!r}: the value must be a string")
    else:
        value = raw
    return Matcher(m.group(1), m.group(2), value)


def parse_matchers(spec: str | Iterable[str] | None) -> tuple[Matcher, ...]:
    """Parse a matcher list: ``'{a="1", b=~"x|y"}'`` or a list of matcher strings."""
    if spec is None:
        return ()
    if isinstance(spec, str):
        s = spec.strip()
        if s.startswith("{") and s.endswith("}"):
            s = s[1:-1]
        items: list[str] = _split_top_level(s)
    else:
        items = []
        for item in spec:
            items.extend(_split_top_level(str(item).strip().strip("{}")))
    return tuple(parse_matcher(t) for t in items)


def _legacy_matchers(cfg: Mapping[str, Any], prefix: str, where: str) -> list[Matcher]:
    out: list[Matcher] = []
    for key, op in ((f"{prefix}match", "="), (f"{prefix}match_re", "=~")):
        table = cfg.get(key) or {}
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}.{key}: expected a mapping of label to value")
        out.extend(Matcher(str(k), op, str(v)) for k, v in table.items())
    out.extend(parse_matchers(cfg.get(f"{prefix}matchers")))
    return out


def _sorted_matchers(ms: Iterable[Matcher]) -> tuple[Matcher, ...]:
    # Alertmanager sorts a route's matchers by name, then value, for its keys.
    return tuple(sorted(ms, key=lambda m: (m.name, m.value, m.op)))


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches the label set (true for no matchers)."""
    return all(m.matches(labels) for m in matchers)


# --- routes ---

_ROUTE_KEYS = {
    "receiver",
    "group_by",
    "continue",
    "match",
    "match_re",
    "matchers",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "routes",
    "mute_time_intervals",
    "active_time_intervals",
}


@dataclass(slots=True, eq=False)
class Route:
    """A node of the routing tree.

    Parameters
    ----------
    receiver : str
        Name of the receiver notified for alerts this route takes.
    matchers : tuple of Matcher
        All must match for the route to take an alert; the root has none.
    group_by : tuple of str or None
        Labels that split alerts into groups; None groups by every label
        (``...`` in the config); ``()`` puts all alerts in one group.
    group_wait_ms, group_interval_ms, repeat_interval_ms : int
        Notification timing, in milliseconds.
    continue_matching : bool
        After this route matched, try its later siblings too (``continue``).
    routes : list of Route
        Children, tried in order.
    """

    receiver: str
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] | None = ()
    group_wait_ms: int = DEFAULT_GROUP_WAIT_MS
    group_interval_ms: int = DEFAULT_GROUP_INTERVAL_MS
    repeat_interval_ms: int = DEFAULT_REPEAT_INTERVAL_MS
    continue_matching: bool = False
    routes: list[Route] = field(default_factory=list)
    key: str = "{}"
    id: str = "{}"

    @classmethod
    def from_config(
        cls,
        cfg: Mapping[str, Any],
        parent: Route | None = None,
        where: str = "route",
        index: int = 0,
    ) -> Route:
        """Build a route tree from Alertmanager's ``route`` section.

        Children inherit ``receiver``, ``group_by`` and the three intervals
        they do not set.  Durations are strings like ``"30s"`` or int ms.

        Raises
        ------
        ConfigError
            On unknown keys, a root route with matchers or without a
            receiver, a bad duration or matcher, or time intervals (which
            the router does not support).
        """
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(cfg).__name__}")
        unknown = set(cfg) - _ROUTE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {min(unknown)!r}")
        if cfg.get("mute_time_intervals") or cfg.get("active_time_intervals"):
            raise ConfigError(f"{where}: time intervals are not supported by obscore")
        matchers = _sorted_matchers(_legacy_matchers(cfg, "", where))
        if parent is None and matchers:
            raise ConfigError(f"{where}: the root route must not have matchers")

        def duration(key: str, inherited: int) -> int:
            if cfg.get(key) is None:
                return inherited
            try:
                return parse_duration(cfg[key])
            except ConfigError as exc:
                raise ConfigError(f"{where}.{key}: {exc}") from None

        receiver = cfg.get("receiver") or (parent.receiver if parent else None)
        if not receiver:
            raise ConfigError(f"{where}: the root route needs a receiver")
        group_by: tuple[str, ...] | None
        if "group_by" in cfg and cfg["group_by"] is not None:
            names = [str(n) for n in cfg["group_by"]]
            if "..." in names:
                if len(names) > 1:
                    raise ConfigError(f"{where}.group_by: '...' must stand alone")
                group_by = None
            else:
                group_by = tuple(dict.fromkeys(names))
        else:
            group_by = parent.group_by if parent else ()
        route = cls(
            receiver=str(receiver),
            matchers=matchers,
            group_by=group_by,
            group_wait_ms=duration(
                "group_wait", parent.group_wait_ms if parent else DEFAULT_GROUP_WAIT_MS
            ),
            group_interval_ms=duration(
                "group_interval",
                parent.group_interval_ms if parent else DEFAULT_GROUP_INTERVAL_MS,
            ),
            repeat_interval_ms=duration(
                "repeat_interval",
                parent.repeat_interval_ms if parent else DEFAULT_REPEAT_INTERVAL_MS,
            ),
            continue_matching=bool(cfg.get("continue", False)),
        )
        if route.group_interval_ms <= 0:
            raise ConfigError(f"{where}.group_interval: must be positive")
        mstr = "{" + ",".join(str(m) for m in matchers) + "}"
        route.key = mstr if parent is None else f"{parent.key}/{mstr}"
        route.id = mstr if parent is None else f"{parent.id}/{mstr}/{index}"
        for i, child in enumerate(cfg.get("routes") or ()):
            route.routes.append(
                cls.from_config(child, route, f"{where}.routes[{i}]", i)
            )
        return route

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes that take an alert: deepest matches, honouring ``continue``."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            sub = child.match(labels)
            found.extend(sub)
            if sub and not child.continue_matching:
                break
        return found or [self]

    def walk(self) -> Iterator[Route]:
        """This route and all below it, depth first."""
        yield self
        for child in self.routes:
            yield from child.walk()

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that name the alert's group on this route."""
        if self.group_by is None:
            return dict(labels)
        return {n: labels[n] for n in self.group_by if n in labels}


# --- alerts, silences, inhibition ---


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The router's record of one alert: the latest post under a fingerprint.

    Parameters
    ----------
    fingerprint : str
        Hash of the label set (``obscore.alert.fingerprint``).
    labels, annotations : dict
        Label set (identity) and annotations (last post wins).
    start_ms : int
        When the alert started.
    end_ms : int
        When it ends or ended; for an alert posted without an end, the post
        time plus the resolve timeout (``timeout`` is then True).
    updated_ms : int
        When the router received the post.
    """

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    start_ms: int
    end_ms: int
    updated_ms: int
    timeout: bool = False
    generator_url: str = ""

    def is_resolved_at(self, now_ms: int) -> bool:
        """Whether the alert has ended by ``now_ms``."""
        return self.end_ms <= now_ms

    def merge(self, older: AlertRecord) -> AlertRecord:
        """Merge with an older post whose activity overlaps this one.

        The earliest start wins; a later explicit end (not a timeout) wins.
        """
        start = min(self.start_ms, older.start_ms)
        end = self.end_ms
        if self.end_ms <= self.updated_ms:  # this post resolves the alert
            if older.end_ms <= self.updated_ms and older.end_ms > end:
                end = older.end_ms
        elif older.end_ms > end and not older.timeout:
            end = older.end_ms
        return AlertRecord(
            self.fingerprint,
            self.labels,
            self.annotations,
            start,
            end,
            self.updated_ms,
            self.timeout,
            self.generator_url,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for persistence)."""
        return {
            "fingerprint": self.fingerprint,
            "labels": self.labels,
            "annotations": self.annotations,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "updated_ms": self.updated_ms,
            "timeout": self.timeout,
            "generator_url": self.generator_url,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlertRecord:
        """Inverse of ``to_dict``."""
        return cls(
            d["fingerprint"],
            dict(d["labels"]),
            dict(d["annotations"]),
            int(d["start_ms"]),
            int(d["end_ms"]),
            int(d["updated_ms"]),
            bool(d["timeout"]),
            str(d.get("generator_url", "")),
        )


@dataclass(frozen=True, slots=True)
class Silence:
    """A user rule muting matching alerts between ``start_ms`` and ``end_ms``.

    Both ends are inclusive, as in Alertmanager.
    """

    id: str
    matchers: tuple[Matcher, ...]
    start_ms: int
    end_ms: int
    author: str = ""
    comment: str = ""
    updated_ms: int = 0

    def state(self, now_ms: int) -> str:
        """``"pending"``, ``"active"`` or ``"expired"`` at ``now_ms``."""
        if now_ms < self.start_ms:
            return "pending"
        if now_ms > self.end_ms:
            return "expired"
        return "active"

    def mutes(self, labels: Mapping[str, str], now_ms: int) -> bool:
        """Whether the silence is active and matches the label set."""
        return self.start_ms <= now_ms <= self.end_ms and matches_all(
            self.matchers, labels
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for persistence)."""
        return {
            "id": self.id,
            "matchers": [[m.name, m.op, m.value] for m in self.matchers],
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "author": self.author,
            "comment": self.comment,
            "updated_ms": self.updated_ms,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Silence:
        """Inverse of ``to_dict``."""
        return cls(
            str(d["id"]),
            tuple(Matcher(*m) for m in d["matchers"]),
            int(d["start_ms"]),
            int(d["end_ms"]),
            str(d.get("author", "")),
            str(d.get("comment", "")),
            int(d.get("updated_ms", 0)),
        )


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """A firing source alert mutes target alerts that agree on ``equal`` labels.

    An alert that matches both sides is not muted by sources that also match
    the target side, so a rule never lets an alert silence itself.
    """

    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], where: str = "inhibit_rules"
    ) -> InhibitRule:
        """Build from one entry of Alertmanager's ``inhibit_rules``."""
        known = {
            "source_match",
            "source_match_re",
            "source_matchers",
            "target_match",
            "target_match_re",
            "target_matchers",
            "equal",
        }
        unknown = set(cfg) - known
        if unknown:
            raise ConfigError(f"{where}: unknown key {min(unknown)!r}")
        return cls(
            tuple(_legacy_matchers(cfg, "source_", where)),
            tuple(_legacy_matchers(cfg, "target_", where)),
            tuple(str(n) for n in cfg.get("equal") or ()),
        )


# --- notifications and the notification log ---


@dataclass(frozen=True, slots=True)
class Notification:
    """What one flush of one group sends to one receiver.

    Parameters
    ----------
    receiver : str
        Receiver name.
    group_key : str
        Alertmanager-style group key: route key, ``:``, group labels.
    group_labels : dict
        The labels that define the group.
    alerts : tuple of AlertRecord
        The alerts sent, in Alertmanager's order; an alert is resolved in
        this notification when ``end_ms <= ts_ms``.
    ts_ms : int
        Scheduled time of the flush that produced it.
    """

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: tuple[AlertRecord, ...]
    ts_ms: int

    @property
    def status(self) -> str:
        """``"firing"`` when any alert fires, else ``"resolved"``."""
        return (
            "firing"
            if any(not a.is_resolved_at(self.ts_ms) for a in self.alerts)
            else "resolved"
        )

    @property
    def key(self) -> str:
        """Idempotency key: the same flush always gets the same key."""
        h = hashlib.blake2b(digest_size=12)
        h.update(f"{self.receiver}\xff{self.group_key}\xff{self.ts_ms}".encode())
        return h.hexdigest()

    def is_firing(self, alert: AlertRecord) -> bool:
        """Whether ``alert`` is firing in this notification."""
        return not alert.is_resolved_at(self.ts_ms)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """The notification log's memory of the last notification for a group."""

    firing: frozenset[str]
    resolved: frozenset[str]
    ts_ms: int
    expires_ms: int


@dataclass(frozen=True, slots=True)
class Receiver:
    """A receiver: its name, whether it hears about resolutions, whether it sends."""

    name: str
    send_resolved: bool = True
    has_integrations: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "receivers") -> Receiver:
        """Build from an Alertmanager receiver entry or ``{"name", "send_resolved"}``.

        Notes
        -----
        obscore models one integration per receiver; ``send_resolved`` is
        taken from the first ``*_configs`` entry (webhook defaults to true,
        the others to false, as in Alertmanager).
        """
        name = cfg.get("name")
        if not name:
            raise ConfigError(f"{where}: a receiver needs a name")
        configs = [(k, v) for k, v in cfg.items() if k.endswith("_configs") and v]
        if not configs:
            explicit = cfg.get("send_resolved")
            return cls(
                str(name),
                bool(explicit) if explicit is not None else True,
                "send_resolved" in cfg,
            )
        kind, entries = configs[0]
        first = entries[0] if entries else {}
        default = kind == "webhook_configs"
        return cls(str(name), bool(first.get("send_resolved", default)), True)


@dataclass(slots=True, eq=False)
class _Group:
    gid: tuple[str, str]
    route: Route
    key: str
    labels: dict[str, str]
    alerts: dict[str, AlertRecord]
    next_flush_ms: int
    has_flushed: bool = False


# --- the router ---


def _alert_order(a: AlertRecord, b: AlertRecord) -> int:
    # Alertmanager's order: by job, then instance (present first), then by
    # label set (fewer labels first, then the first differing name or value).
    for name in ("job", "instance"):
        x, y = a.labels.get(name), b.labels.get(name)
        if x is None and y is None:
            continue
        if x is None:
            return 1
        if y is None:
            return -1
        if x != y:
            return -1 if x < y else 1
    la, lb = a.labels, b.labels
    if len(la) != len(lb):
        return -1 if len(la) < len(lb) else 1
    for name in sorted(set(la) | set(lb)):
        if name not in la:
            return -1
        if name not in lb:
            return 1
        if la[name] != lb[name]:
            return -1 if la[name] < lb[name] else 1
    return 0


_ORDER_KEY = functools.cmp_to_key(_alert_order)


def _string_map(item: Mapping[str, Any], key: str) -> dict[str, str]:
    """An alert's ``labels`` or ``annotations``: an object of names to values."""
    value = item.get(key) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be an object of name: value pairs, got {value!r:.60}")
    return {str(k): str(v) for k, v in value.items()}


class Router:
    """Route, group, silence and inhibit alerts; produce notifications on a clock.

    Parameters
    ----------
    config : Mapping
        Alertmanager-shaped config: ``route`` (required), ``receivers``,
        ``inhibit_rules`` and ``global.resolve_timeout``.  Durations are
        strings (``"30s"``) or int ms.

    Raises
    ------
    ConfigError
        When the config is malformed or a route names an unknown receiver.

    Examples
    --------
    >>> r = Router({"route": {"receiver": "ops", "group_wait": "1s"},
    ...             "receivers": [{"name": "ops", "send_resolved": True}]})
    >>> r.post([{"labels": {"alertname": "Up"}}], now_ms=0)
    1
    >>> [n.group_key for n in r.tick(1_000)]
    ['{}:{}']
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        if "route" not in config:
            raise ConfigError("alert config: the 'route' section is missing")
        self.route = Route.from_config(config["route"])
        receivers = [
            Receiver.from_config(r, f"receivers[{i}]")
            for i, r in enumerate(config.get("receivers") or ())
        ]
        self.receivers = {r.name: r for r in receivers}
        for node in self.route.walk():
            if self.receivers and node.receiver not in self.receivers:
                raise ConfigError(f"route: receiver {node.receiver!r} is not defined")
        self.inhibit_rules = tuple(
            InhibitRule.from_config(c, f"inhibit_rules[{i}]")
            for i, c in enumerate(config.get("inhibit_rules") or ())
        )
        glob = config.get("global") or {}
        self.resolve_timeout_ms = parse_duration(
            glob.get("resolve_timeout", DEFAULT_RESOLVE_TIMEOUT_MS)
        )
        self.gc_interval_ms = 30 * 60_000
        self.now_ms: int | None = None
        self._alerts: dict[str, AlertRecord] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._queue: list[tuple[int, int, tuple[str, str]]] = []
        self._seq = itertools.count()
        # Per inhibit rule: source alerts keyed by their values of the `equal`
        # labels, so a target looks up only the sources it could agree with.
        self._sources: list[dict[tuple[str, ...], dict[str, AlertRecord]]] = [
            {} for _ in self.inhibit_rules
        ]
        # fingerprint -> ([(route, group id, group labels)], [(inhibit rule,
        # equal-label values)]): both are pure functions of the label set, and
        # rule evaluations resend the same alerts over and over.
        self._route_cache: dict[
            str, tuple[list[Any], list[tuple[int, tuple[str, ...]]]]
        ] = {}
        self.silences: dict[str, Silence] = {}
        self.nflog: dict[tuple[str, str], LogEntry] = {}
        self._outbox: list[Notification] = []
        self._last_gc_ms: int | None = None

    # -- the clock --

    def _advance(self, now_ms: int) -> int:
        now_ms = int(now_ms)
        if self.now_ms is not None and now_ms < self.now_ms:
            logger.debug(
                "router clock went back from %d to %d; kept", self.now_ms, now_ms
            )
            now_ms = self.now_ms
        q = self._queue
        while q and q[0][0] <= now_ms:
            due_ms, _, gid = heapq.heappop(q)
            group = self._groups.get(gid)
            if group is not None and group.next_flush_ms == due_ms:
                self._flush(group, due_ms)
        self.now_ms = now_ms
        if self._last_gc_ms is None:
            self._last_gc_ms = now_ms
        elif now_ms - self._last_gc_ms >= self.gc_interval_ms:
            self._gc(now_ms)
        return now_ms

    def tick(self, now_ms: int) -> list[Notification]:
        """Run every flush due by ``now_ms``; return the notifications produced.

        Flushes run at their scheduled times, so late or jittered ticks give
        the same notifications (with the same ``ts_ms``) as punctual ones.
        """
        self._advance(now_ms)
        out, self._outbox = self._outbox, []
        return out

    def next_due_ms(self) -> int | None:
        """When the next flush is due, or None without groups."""
        while self._queue:
            due_ms, _, gid = self._queue[0]
            group = self._groups.get(gid)
            if group is not None and group.next_flush_ms == due_ms:
                return due_ms
            heapq.heappop(self._queue)
        return None

    # -- alerts in --

    def post(
        self, alerts: Iterable[Mapping[str, Any] | Alert | AlertRecord], now_ms: int
    ) -> int:
        """Receive alerts at ``now_ms``; return how many were accepted.

        Parameters
        ----------
        alerts : iterable
            Alertmanager API dicts (``labels``, ``annotations``, ``startsAt``,
            ``endsAt``, ``generatorURL``), pipeline ``Alert`` objects (posted
            as firing, without an end) or ``AlertRecord`` objects.
        now_ms : int
            Receive time.

        Notes
        -----
        Invalid alerts (no labels, a bad label name, an end before the
        start, an unreadable time) are dropped with one
        ``DroppedDataWarning`` per call; the others are kept.
        """
        now_ms = self._advance(now_ms)
        accepted, dropped, first_error = 0, 0, ""
        for item in alerts:
            try:
                rec = self._to_record(item, now_ms)
            except ValueError as exc:
                dropped += 1
                first_error = first_error or str(exc)
                continue
            self._store(rec, now_ms)
            accepted += 1
        self._advance(now_ms)  # flushes of groups whose alerts were already old
        if dropped:
            warnings.warn(
                f"{dropped} alert(s) dropped, first: {first_error}",
                DroppedDataWarning,
                stacklevel=2,
            )
        logger.debug("alerts posted: %d accepted, %d dropped", accepted, dropped)
        return accepted

    def _to_record(self, item: Any, now_ms: int) -> AlertRecord:
        if isinstance(item, AlertRecord):
            return item
        start_ms: int | None
        end_ms: int | None
        if isinstance(item, Alert):
            labels = dict(item.labels)
            annotations = {"summary": item.summary, **item.annotations}
            start_ms, end_ms, url = item.start_ms, None, ""
        else:
            labels = _string_map(item, "labels")
            annotations = _string_map(item, "annotations")
            start_ms = _time_field(item, "startsAt", "start_ms")
            end_ms = _time_field(item, "endsAt", "end_ms")
            url = str(item.get("generatorURL", ""))
        if not labels:
            raise ValueError("an alert needs at least one label")
        for name in labels:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"label name {name!r} is not valid")
        if start_ms is None:
            start_ms = end_ms if end_ms is not None else now_ms
        timeout = end_ms is None
        if end_ms is None:
            end_ms = now_ms + self.resolve_timeout_ms
        if end_ms < start_ms:
            raise ValueError(f"alert {format_labels(labels)}: end before start")
        return AlertRecord(
            fingerprint(labels),
            labels,
            annotations,
            int(start_ms),
            int(end_ms),
            now_ms,
            timeout,
            url,
        )

    def _store(self, rec: AlertRecord, now_ms: int) -> None:
        old = self._alerts.get(rec.fingerprint)
        if old is not None and (
            (old.start_ms < rec.end_ms < old.end_ms)
            or (old.start_ms < rec.start_ms < old.end_ms)
        ):
            rec = rec.merge(old)
        self._alerts[rec.fingerprint] = rec
        cached = self._route_cache.get(rec.fingerprint)
        if cached is None:
            targets = []
            for route in self.route.match(rec.labels):
                glabels = route.group_labels(rec.labels)
                targets.append((route, (route.id, fingerprint(glabels)), glabels))
            sources = [
                (i, tuple(rec.labels.get(n, "") for n in rule.equal))
                for i, rule in enumerate(self.inhibit_rules)
                if matches_all(rule.source_matchers, rec.labels)
            ]
            if len(self._route_cache) >= 500_000:
                self._route_cache.clear()
            cached = self._route_cache[rec.fingerprint] = (targets, sources)
        targets, sources = cached
        for i, eq in sources:
            self._sources[i].setdefault(eq, {})[rec.fingerprint] = rec
        for route, gid, glabels in targets:
            group = self._groups.get(gid)
            if group is None:
                group = _Group(
                    gid,
                    route,
                    f"{route.key}:{format_labels(glabels)}",
                    glabels,
                    {},
                    now_ms + route.group_wait_ms,
                )
                self._groups[gid] = group
                self._schedule(group)
                logger.debug("group created: %s", group.key)
            group.alerts[rec.fingerprint] = rec
            if (
                not group.has_flushed
                and rec.start_ms + route.group_wait_ms < now_ms
                and group.next_flush_ms > now_ms
            ):
                # An alert older than group_wait: flush right after this post.
                group.next_flush_ms = now_ms
                self._schedule(group)

    def _schedule(self, group: _Group) -> None:
        heapq.heappush(self._queue, (group.next_flush_ms, next(self._seq), group.gid))

    # -- silences --

    def add_silence(
        self,
        matchers: str | Sequence[str] | Sequence[Matcher],
        end_ms: int,
        now_ms: int,
        *,
        start_ms: int | None = None,
        author: str = "",
        comment: str = "",
        silence_id: str | None = None,
    ) -> str:
        """Create (or replace) a silence; return its id.

        A start in the past becomes ``now_ms``.

        Raises
        ------
        ConfigError
            Without matchers, or when the end is before the start or past.
        """
        now_ms = self._advance(now_ms)
        if isinstance(matchers, str) or (
            matchers and not isinstance(matchers[0], Matcher)
        ):
            ms = parse_matchers(matchers)  # type: ignore[arg-type]
        else:
            ms = tuple(matchers)  # type: ignore[arg-type]
        if not ms:
            raise ConfigError("a silence needs at least one matcher")
        start = max(now_ms, start_ms if start_ms is not None else now_ms)
        if end_ms < now_ms or end_ms < start:
            raise ConfigError(
                f"silence end {end_ms!r} must not be before its start {start!r} or now"
            )
        sid = (
            silence_id
            or hashlib.blake2b(
                f"{now_ms}\xff{len(self.silences)}\xff{ms}".encode(), digest_size=8
            ).hexdigest()
        )
        self.silences[sid] = Silence(
            sid, ms, start, int(end_ms), author, comment, now_ms
        )
        logger.info(
            "silence added: id=%s matchers=%s until=%d",
            sid,
            ",".join(map(str, ms)),
            end_ms,
        )
        return sid

    def expire_silence(self, silence_id: str, now_ms: int) -> None:
        """End a silence at ``now_ms``.

        Raises
        ------
        KeyError
            For an unknown silence id.
        """
        now_ms = self._advance(now_ms)
        s = self.silences[silence_id]
        if s.end_ms > now_ms:
            start = min(s.start_ms, now_ms)
            self.silences[silence_id] = Silence(
                s.id, s.matchers, start, now_ms, s.author, s.comment, now_ms
            )
            logger.info("silence expired: id=%s", silence_id)

    # -- muting --

    def is_silenced(self, labels: Mapping[str, str], now_ms: int) -> list[str]:
        """Ids of the silences muting the label set at ``now_ms``."""
        return [s.id for s in self.silences.values() if s.mutes(labels, now_ms)]

    def is_inhibited(self, labels: Mapping[str, str], now_ms: int) -> list[str]:
        """Fingerprints of the firing alerts that inhibit the label set."""
        for i, rule in enumerate(self.inhibit_rules):
            if not matches_all(rule.target_matchers, labels):
                continue
            two_sided = matches_all(rule.source_matchers, labels)
            eq = tuple(labels.get(n, "") for n in rule.equal)
            for src in self._sources[i].get(eq, {}).values():
                if src.is_resolved_at(now_ms):
                    continue
                if two_sided and matches_all(rule.target_matchers, src.labels):
                    continue
                return [src.fingerprint]
        return []

    def is_muted(self, labels: Mapping[str, str], now_ms: int) -> bool:
        """Whether a silence or an inhibition mutes the label set at ``now_ms``."""
        return bool(
            (self.silences and self.is_silenced(labels, now_ms))
            or (self.inhibit_rules and self.is_inhibited(labels, now_ms))
        )

    # -- flushing --

    def _flush(self, group: _Group, now_ms: int) -> None:
        route = group.route
        group.has_flushed = True
        alerts = sorted(group.alerts.values(), key=_ORDER_KEY)
        visible = [a for a in alerts if not self.is_muted(a.labels, now_ms)]
        if visible:
            self._notify(group, visible, now_ms)
        for a in alerts:
            if a.is_resolved_at(now_ms) and group.alerts.get(a.fingerprint) is a:
                del group.alerts[a.fingerprint]
        if not group.alerts:
            # NOTE: Alertmanager keeps an empty group until its 30 s cleanup;
            # an alert arriving before that waits for the next group_interval
            # instead of group_wait.  We drop the group at once, so the
            # timing does not depend on when a background sweep ran.
            del self._groups[group.gid]
            logger.debug("group removed: %s", group.key)
            return
        group.next_flush_ms = now_ms + route.group_interval_ms
        self._schedule(group)

    def _notify(self, group: _Group, alerts: list[AlertRecord], now_ms: int) -> None:
        route = group.route
        receiver = self.receivers.get(route.receiver, Receiver(route.receiver))
        if not receiver.has_integrations:
            return
        firing = frozenset(
            a.fingerprint for a in alerts if not a.is_resolved_at(now_ms)
        )
        resolved = frozenset(a.fingerprint for a in alerts if a.is_resolved_at(now_ms))
        lkey = (receiver.name, group.key)
        entry = self.nflog.get(lkey)
        if entry is not None and entry.expires_ms <= now_ms:
            entry = None
        if not _needs_update(
            entry,
            firing,
            resolved,
            receiver.send_resolved,
            route.repeat_interval_ms,
            now_ms,
        ):
            return
        self.nflog[lkey] = LogEntry(
            firing, resolved, now_ms, now_ms + 2 * route.repeat_interval_ms
        )
        sent = (
            alerts
            if receiver.send_resolved
            else [a for a in alerts if a.fingerprint in firing]
        )
        if not firing and not receiver.send_resolved:
            return
        note = Notification(
            receiver.name, group.key, dict(group.labels), tuple(sent), now_ms
        )
        self._outbox.append(note)
        logger.info(
            "notification: receiver=%s group=%s status=%s alerts=%d ts=%d",
            receiver.name,
            group.key,
            note.status,
            len(sent),
            now_ms,
        )

    def _gc(self, now_ms: int) -> None:
        grouped = {fp for g in self._groups.values() for fp in g.alerts}
        stale = [
            fp
            for fp, a in self._alerts.items()
            if a.is_resolved_at(now_ms) and fp not in grouped
        ]
        for fp in stale:
            del self._alerts[fp]
            for by_eq in self._sources:
                for src in by_eq.values():
                    src.pop(fp, None)
        self.nflog = {k: e for k, e in self.nflog.items() if e.expires_ms > now_ms}
        self.silences = {
            k: s for k, s in self.silences.items() if s.end_ms + 5 * 86_400_000 > now_ms
        }
        self._last_gc_ms = now_ms
        if stale:
            logger.debug("router gc: %d resolved alerts dropped", len(stale))

    # -- views --

    def alerts(self) -> list[AlertRecord]:
        """Every alert the router remembers, resolved ones included."""
        return list(self._alerts.values())

    def groups_of(self, receiver: str) -> list[tuple[str, list[AlertRecord]]]:
        """The groups routed to ``receiver`` that have flushed at least once, as ``(group_key, alerts)``."""
        return [
            (g.key, sorted(g.alerts.values(), key=_ORDER_KEY))
            for g in self._groups.values()
            if g.route.receiver == receiver and g.has_flushed
        ]

    def groups(self) -> list[tuple[str, list[AlertRecord]]]:
        """Current aggregation groups as ``(group_key, alerts)``."""
        return [
            (g.key, sorted(g.alerts.values(), key=_ORDER_KEY))
            for g in self._groups.values()
        ]

    # -- persistence --

    def state(self) -> dict[str, Any]:
        """Everything needed to resume after a restart, as JSON-able data."""
        return {
            "version": 1,
            "now_ms": self.now_ms,
            "alerts": [a.to_dict() for a in self._alerts.values()],
            "silences": [s.to_dict() for s in self.silences.values()],
            "groups": [
                {
                    "route": g.route.id,
                    "labels": g.labels,
                    "alerts": sorted(g.alerts),
                    "next_flush_ms": g.next_flush_ms,
                    "has_flushed": g.has_flushed,
                }
                for g in self._groups.values()
            ],
            "nflog": [
                {
                    "receiver": r,
                    "group_key": k,
                    "firing": sorted(e.firing),
                    "resolved": sorted(e.resolved),
                    "ts_ms": e.ts_ms,
                    "expires_ms": e.expires_ms,
                }
                for (r, k), e in self.nflog.items()
            ],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load what ``state()`` returned; groups of routes no longer configured are dropped."""
        if state.get("version") != 1:
            raise ConfigError(
                f"router state version must be 1, got {state.get('version')!r}"
            )
        self.now_ms = state.get("now_ms")
        self._alerts = {
            a["fingerprint"]: AlertRecord.from_dict(a) for a in state["alerts"]
        }
        self.silences = {s["id"]: Silence.from_dict(s) for s in state["silences"]}
        for i, rule in enumerate(self.inhibit_rules):
            self._sources[i] = {}
            for fp, a in self._alerts.items():
                if matches_all(rule.source_matchers, a.labels):
                    eq = tuple(a.labels.get(n, "") for n in rule.equal)
                    self._sources[i].setdefault(eq, {})[fp] = a
        routes = {r.id: r for r in self.route.walk()}
        self._groups, self._queue = {}, []
        for g in state["groups"]:
            route = routes.get(g["route"])
            if route is None:
                logger.warning(
                    "router restore: route %s is gone; group dropped", g["route"]
                )
                continue
            labels = dict(g["labels"])
            gid = (route.id, fingerprint(labels))
            members = {fp: self._alerts[fp] for fp in g["alerts"] if fp in self._alerts}
            group = _Group(
                gid,
                route,
                f"{route.key}:{format_labels(labels)}",
                labels,
                members,
                int(g["next_flush_ms"]),
                bool(g["has_flushed"]),
            )
            self._groups[gid] = group
            self._schedule(group)
        self.nflog = {
            (e["receiver"], e["group_key"]): LogEntry(
                frozenset(e["firing"]),
                frozenset(e["resolved"]),
                int(e["ts_ms"]),
                int(e["expires_ms"]),
            )
            for e in state["nflog"]
        }
        logger.info(
            "router restored: %d alerts, %d groups, %d silences",
            len(self._alerts),
            len(self._groups),
            len(self.silences),
        )


def _needs_update(
    entry: LogEntry | None,
    firing: frozenset[str],
    resolved: frozenset[str],
    send_resolved: bool,
    repeat_ms: int,
    now_ms: int,
) -> bool:
    # Alertmanager's dedup stage, decision by decision.
    if entry is None:
        return bool(firing)  # never notified: only when something fires
    if not firing <= entry.firing:
        return True  # a firing alert the receiver has not heard of
    if not firing:
        return bool(entry.firing)  # all resolved: say so once
    if send_resolved and not resolved <= entry.resolved:
        return True  # a resolution the receiver has not heard of
    return entry.ts_ms < now_ms - repeat_ms  # nothing new: repeat when due


def _time_field(item: Mapping[str, Any], api_key: str, ms_key: str) -> int | None:
    if item.get(ms_key) is not None:
        return int(item[ms_key])
    text = item.get(api_key)
    if not text:
        return None
    return parse_rfc3339(str(text))
