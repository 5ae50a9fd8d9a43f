"""The service catalogue and change events: what each series belongs to.

The catalogue knows each service's owner, tier, regions, hosts, business
weight and dependencies (a directed graph, caller -> callees; cycles are
allowed and handled).  Change events (deploys, config changes, scaling,
feature flags) are recorded with their time so an anomaly can name the
changes that preceded it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from obscore.errors import ConfigError

logger = logging.getLogger(__name__)

EVENT_KINDS = ("deploy", "config", "scaling", "feature_flag", "other")


@dataclass(frozen=True, slots=True)
class Service:
    """One entry of the catalogue."""

    name: str
    owner: str = "unknown"
    tier: str = "unknown"
    regions: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A change to a service at a point in time."""

    ts: int
    service: str
    kind: str
    description: str = ""
    region: str | None = None

    def __str__(self) -> str:
        where = f" in {self.region}" if self.region else ""
        return f"{self.kind} of {self.service}{where}: {self.description}".rstrip(": ")


@dataclass(slots=True)
class Catalogue:
    """Services by name, their graph, the hosts' owners and change events."""

    services: dict[str, Service] = field(default_factory=dict)
    events: list[ChangeEvent] = field(default_factory=list)

    def add(self, service: Service) -> None:
        self.services[service.name] = service

    def get(self, name: str | None) -> Service | None:
        return self.services.get(name) if name is not None else None

    def callees(self, name: str) -> tuple[str, ...]:
        s = self.services.get(name)
        return s.dependencies if s else ()

    def callers(self, name: str) -> tuple[str, ...]:
        return tuple(sorted(s.name for s in self.services.values() if name in s.dependencies))

    def dependencies(self) -> dict[str, tuple[str, ...]]:
        return {n: s.dependencies for n, s in self.services.items()}

    def service_of_host(self, host: str) -> str | None:
        for s in self.services.values():
            if host in s.hosts:
                return s.name
        return None

    def distance(self, a: str, b: str, limit: int = 3) -> int | None:
        """Hops between two services in the undirected call graph (None if beyond ``limit``).

        Breadth-first with a visited set, so a cycle neither hangs nor repeats.
        """
        if a == b:
            return 0
        seen, frontier = {a}, [a]
        for hops in range(1, limit + 1):
            nxt = []
            for node in frontier:
                for other in (*self.callees(node), *self.callers(node)):
                    if other == b:
                        return hops
                    if other not in seen:
                        seen.add(other)
                        nxt.append(other)
            frontier = nxt
        return None

    # --- change events -------------------------------------------------------

    def record_event(
        self, ts: int, service: str, kind: str, description: str = "", region: str | None = None
    ) -> ChangeEvent:
        if kind not in EVENT_KINDS:
            raise ConfigError(f"change event kind {kind!r} is not one of {list(EVENT_KINDS)!r}")
        event = ChangeEvent(int(ts), service, kind, description, region)
        self.events.append(event)
        self.events.sort(key=lambda e: e.ts)
        logger.info("change event recorded: service=%s kind=%s ts=%d", service, kind, ts)
        return event

    def events_before(
        self, ts: int, lookback_ms: int, services: Iterable[str] | None = None
    ) -> list[ChangeEvent]:
        """Events in ``[ts - lookback_ms, ts]``, of the given services if any."""
        wanted = set(services) if services is not None else None
        return [
            e for e in self.events
            if ts - lookback_ms <= e.ts <= ts and (wanted is None or e.service in wanted)
        ]

    def save_events(self, path: Path) -> None:
        path.write_text(json.dumps([asdict(e) for e in self.events]), encoding="utf-8")

    def load_events(self, path: Path) -> None:
        if path.exists():
            self.events = [ChangeEvent(**e) for e in json.loads(path.read_text("utf-8"))]


def from_config(raw: Mapping) -> Catalogue:
    """A catalogue from the ``[[services]]`` tables of a config."""
    cat = Catalogue()
    for i, s in enumerate(raw.get("services", [])):
        try:
            cat.add(
                Service(
                    name=str(s["name"]),
                    owner=str(s.get("owner", "unknown")),
                    tier=str(s.get("tier", "unknown")),
                    regions=tuple(s.get("regions", ())),
                    hosts=tuple(s.get("hosts", ())),
                    dependencies=tuple(s.get("dependencies", ())),
                    weight=float(s.get("weight", 1.0)),
                )
            )
        except KeyError:
            raise ConfigError(f"services[{i}]: 'name' is required") from None
    return cat


def from_platform(platform) -> Catalogue:
    """A catalogue describing a simulated platform (:class:`obscore.sim.Platform`)."""
    cat = Catalogue()
    for name in platform.services:
        hosts = tuple(h for (svc, _), hs in platform.hosts.items() if svc == name for h in hs)
        cat.add(
            Service(
                name=name,
                owner=platform.owner(name),
                tier="edge" if not platform.callers(name) else "backend",
                regions=tuple(platform.regions),
                hosts=hosts,
                dependencies=tuple(platform.dependencies.get(name, ())),
            )
        )
    return cat
