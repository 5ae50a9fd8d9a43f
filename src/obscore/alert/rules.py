"""Alert rules: thresholds and anomaly scores with pending, keep-firing and hysteresis.

A rule watches values (a metric's value, or a detector's score) per label
set and moves each label set through the states

``inactive -> pending -> firing -> inactive`` (resolved) ``-> pending -> ...``

- the condition must hold for ``for_ms`` before pending turns firing (a
  condition that drops while pending goes back to inactive silently);
- a firing alert resolves only once the condition has been false for
  ``keep_firing_for_ms``;
- with a ``recovery`` threshold, a firing alert stays active until the value
  crosses the recovery level, not the trigger level (hysteresis);
- an alert that changes state more than ``flap_max_changes`` times within
  ``flap_window_ms`` is flapping: it is held firing, with annotation
  ``flapping="true"``, until its condition stays false for ``flap_hold_ms``.

``RuleEvaluator.evaluate`` returns the alerts to post to a ``Router``:
every firing alert at every evaluation (as Prometheus resends), and every
alert that resolved in this evaluation with its end.
"""

from __future__ import annotations

import logging
import math
import string
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from obscore.alert.dedup import fingerprint
from obscore.errors import ConfigError

logger = logging.getLogger(__name__)

_OPS = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One alerting rule.

    Parameters
    ----------
    name : str
        The ``alertname`` label of its alerts.
    threshold : float
        Trigger level.
    op : str
        How the value compares with the threshold to trigger: ``">"``,
        ``">="``, ``"<"`` or ``"<="``.
    for_ms : int
        How long the condition must hold before the alert fires.
    keep_firing_for_ms : int
        How long a firing alert stays firing after its condition stops.
    recovery : float or None
        Level the value must cross back over before a firing alert counts as
        recovered; None uses ``threshold``.  It must lie on the calm side of
        the threshold (below it for ``>``).
    labels, annotations : Mapping[str, str]
        Added to each alert; values are ``string.Template`` text with
        ``$value``, ``$threshold``, ``$rule`` and the series labels
        (``${service}``).  Unknown names stay as written.
    source : str
        ``"value"`` for a threshold rule, ``"score"`` for an anomaly-score rule.
    flap_window_ms, flap_max_changes, flap_hold_ms : int
        Flapping detection and its hold; ``flap_max_changes=0`` turns it off.

    Notes
    -----
    A NaN value counts as "condition false".
    """

    name: str
    threshold: float
    op: str = ">"
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    recovery: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    source: str = "value"
    flap_window_ms: int = 600_000
    flap_max_changes: int = 0
    flap_hold_ms: int = 300_000

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ConfigError(
                f"rule {self.name!r}: op must be one of '>', '>=', '<', '<=', got {self.op!r}"
            )
        if self.for_ms < 0 or self.keep_firing_for_ms < 0:
            raise ConfigError(f"rule {self.name!r}: durations must be non-negative")
        if self.recovery is not None:
            above = self.op in (">", ">=")
            if (above and self.recovery > self.threshold) or (
                not above and self.recovery < self.threshold
            ):
                raise ConfigError(
                    f"rule {self.name!r}: recovery {self.recovery!r} must lie on the calm "
                    f"side of threshold {self.threshold!r} for op {self.op!r}"
                )

    @classmethod
    def anomaly_score(cls, name: str, threshold: float = 0.5, **kwargs: Any) -> Rule:
        """A rule on detector scores (higher is more anomalous): fires at ``score >= threshold``."""
        return cls(name, threshold, ">=", source="score", **kwargs)

    def triggers(self, value: float) -> bool:
        """Whether the value meets the trigger condition."""
        return not math.isnan(value) and _OPS[self.op](value, self.threshold)

    def holds(self, value: float) -> bool:
        """Whether a firing alert's value is still short of recovery."""
        if self.recovery is None:
            return self.triggers(value)
        if math.isnan(value):
            return False
        above = self.op in (">", ">=")
        return value > self.recovery if above else value < self.recovery


def render(templates: Mapping[str, str], context: Mapping[str, Any]) -> dict[str, str]:
    """Fill ``string.Template`` text; nothing is evaluated, unknown names stay.

    >>> render({"summary": "${service} at $value"}, {"service": "api", "value": 3})
    {'summary': 'api at 3'}
    """
    ctx = {k: str(v) for k, v in context.items()}
    return {k: string.Template(v).safe_substitute(ctx) for k, v in templates.items()}


@dataclass(slots=True)
class RuleState:
    """Where one label set of one rule stands."""

    labels: dict[str, str]
    state: str = "inactive"  # inactive, pending, firing
    pending_since_ms: int = 0
    active_since_ms: int = 0
    last_true_ms: int = 0
    value: float = math.nan
    fired: int = 0
    changes: deque[int] = field(default_factory=deque)
    flapping: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {
            "labels": self.labels,
            "state": self.state,
            "pending_since_ms": self.pending_since_ms,
            "active_since_ms": self.active_since_ms,
            "last_true_ms": self.last_true_ms,
            "fired": self.fired,
            "changes": list(self.changes),
            "flapping": self.flapping,
        }


class RuleEvaluator:
    """Evaluate rules on values and keep each label set's state.

    Parameters
    ----------
    rules : iterable of Rule
        Rule names must be unique.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: dict[str, Rule] = {}
        for rule in rules:
            if rule.name in self.rules:
                raise ConfigError(f"rule {rule.name!r} is defined twice")
            self.rules[rule.name] = rule
        self.states: dict[tuple[str, str], RuleState] = {}

    def evaluate(
        self,
        rule_name: str,
        values: Iterable[tuple[Mapping[str, str], float]],
        now_ms: int,
    ) -> list[dict[str, Any]]:
        """Evaluate one rule on ``(labels, value)`` pairs at ``now_ms``.

        Label sets not in ``values`` are evaluated as NaN (condition false).

        Returns
        -------
        list of dict
            Alerts for ``Router.post``: ``labels``, ``annotations``,
            ``start_ms``, ``series_labels`` (the evaluated label set, which
            the router ignores) and, for alerts resolved now, ``end_ms``.

        Raises
        ------
        KeyError
            For an unknown rule name.
        """
        rule = self.rules[rule_name]
        seen = set()
        out: list[dict[str, Any]] = []
        for labels, value in values:
            key = (rule.name, fingerprint(labels))
            seen.add(key)
            st = self.states.get(key)
            if st is None:
                st = self.states[key] = RuleState(dict(labels))
            self._step(rule, st, float(value), now_ms, out)
        for key, st in list(self.states.items()):
            if key[0] == rule.name and key not in seen:
                self._step(rule, st, math.nan, now_ms, out)
                if st.state == "inactive" and not st.changes:
                    del self.states[key]
        return out

    def _change(self, rule: Rule, st: RuleState, now_ms: int) -> None:
        if rule.flap_max_changes <= 0:
            return
        st.changes.append(now_ms)
        while st.changes and st.changes[0] <= now_ms - rule.flap_window_ms:
            st.changes.popleft()
        if not st.flapping and len(st.changes) > rule.flap_max_changes:
            st.flapping = True
            logger.warning(
                "alert flapping: rule=%s fingerprint=%s changes=%d in %d ms",
                rule.name,
                fingerprint(st.labels),
                len(st.changes),
                rule.flap_window_ms,
            )

    def _step(
        self, rule: Rule, st: RuleState, value: float, now_ms: int, out: list
    ) -> None:
        st.value = value
        if st.state == "firing":
            hold_ms = max(
                rule.keep_firing_for_ms, rule.flap_hold_ms if st.flapping else 0
            )
            if rule.holds(value):
                st.last_true_ms = now_ms
            elif now_ms - st.last_true_ms >= hold_ms:
                st.state = "inactive"
                self._change(rule, st, now_ms)
                st.flapping = False
                out.append(self._alert(rule, st, now_ms, resolved=True))
                logger.info(
                    "alert resolved: rule=%s fingerprint=%s",
                    rule.name,
                    fingerprint(st.labels),
                )
                return
            out.append(self._alert(rule, st, now_ms))
            return
        if not rule.triggers(value):
            st.state = "inactive"
            return
        if st.state == "inactive":
            st.state, st.pending_since_ms = "pending", now_ms
        if now_ms - st.pending_since_ms >= rule.for_ms:
            st.state = "firing"
            st.active_since_ms = st.last_true_ms = now_ms
            st.fired += 1
            self._change(rule, st, now_ms)
            logger.info(
                "alert firing: rule=%s fingerprint=%s value=%g",
                rule.name,
                fingerprint(st.labels),
                value,
            )
            out.append(self._alert(rule, st, now_ms))

    def _alert(
        self, rule: Rule, st: RuleState, now_ms: int, resolved: bool = False
    ) -> dict:
        ctx = {
            **st.labels,
            "value": st.value,
            "threshold": rule.threshold,
            "rule": rule.name,
        }
        labels = {**render(rule.labels, ctx), **st.labels, "alertname": rule.name}
        annotations = render(rule.annotations, ctx)
        if st.flapping:
            annotations["flapping"] = "true"
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": annotations,
            "start_ms": st.active_since_ms,
            "series_labels": dict(st.labels),
        }
        if resolved:
            alert["end_ms"] = now_ms
        return alert

    def state_of(self, rule_name: str, labels: Mapping[str, str]) -> RuleState | None:
        """The state of one label set under one rule, or None."""
        return self.states.get((rule_name, fingerprint(labels)))
