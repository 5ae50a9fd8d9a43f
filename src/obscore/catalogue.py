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
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from obscore.errors import ConfigError

logger = logging.getLogger(__name__)

EVENT_KINDS = ("deploy", "config", "scaling", "feature_flag", "other")
#: Short spellings accepted wherever a kind is given (``obscore event --kind scale``).
EVENT_KIND_ALIASES = {"scale": "scaling", "flag": "feature_flag"}


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
    business_owner: str | None = None  # owner of series with no service label

    def default_owner(self) -> str:
        """Who owns a series with no service label (a business signal of the platform).

        ``business_owner`` when set (``[pipeline] business_owner`` in the
        config), else the owners of the entry services (those nobody calls),
        else "unknown".
        """
        if self.business_owner:
            return self.business_owner
        called = {d for s in self.services.values() for d in s.dependencies}
        owners = sorted(
            {s.owner for s in self.services.values() if s.name not in called and s.owner != "unknown"}
        )
        return ", ".join(owners) or "unknown"

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
        kind = EVENT_KIND_ALIASES.get(kind, kind)
        if kind not in EVENT_KINDS:
            raise ConfigError(f"change event kind {kind!r} is not one of {list(EVENT_KINDS)!r}")
        if not service:
            raise ConfigError("change event: the service must not be empty")
        event = ChangeEvent(int(ts), service, kind, description, region or None)
        self.events.append(event)
        self.events.sort(key=lambda e: (e.ts, e.service, e.kind, e.description))
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
        """Write the events as JSON, atomically (temporary file, sync, rename)."""
        _write_json_atomic(path, [asdict(e) for e in self.events])

    def load_events(self, path: Path) -> None:
        """Read events saved by :meth:`save_events`; a missing file leaves them as they are.

        Raises
        ------
        ConfigError
            Naming the file and the entry when the file is not such a list.
        """
        if not path.exists():
            return
        try:
            raw = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{path}: change events are not JSON: {exc}") from None
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: expected a list of change events, got {type(raw).__name__}")
        events = []
        for i, e in enumerate(raw):
            try:
                events.append(event_from_mapping(e))
            except ConfigError as exc:
                raise ConfigError(f"{path}, entry {i}: {exc}") from None
        self.events = sorted(events, key=lambda e: (e.ts, e.service, e.kind, e.description))

    def merge_events(self, events: Iterable[ChangeEvent]) -> int:
        """Add the events not held yet (another process may have recorded them); return how many."""
        known = set(self.events)
        new = [e for e in events if e not in known]
        if new:
            self.events = sorted(
                [*self.events, *new], key=lambda e: (e.ts, e.service, e.kind, e.description)
            )
        return len(new)

    # --- services --------------------------------------------------------------

    def save_services(self, path: Path, names: Iterable[str]) -> None:
        """Write the named services as JSON, atomically (those added through the API)."""
        _write_json_atomic(
            path, [service_to_mapping(self.services[n]) for n in sorted(set(names))]
        )

    def load_services(self, path: Path) -> list[str]:
        """Add (or replace) the services saved by :meth:`save_services`; return their names."""
        if not path.exists():
            return []
        try:
            raw = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{path}: services are not JSON: {exc}") from None
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: expected a list of services, got {type(raw).__name__}")
        names = []
        for i, s in enumerate(raw):
            try:
                svc = service_from_mapping(s)
            except ConfigError as exc:
                raise ConfigError(f"{path}, entry {i}: {exc}") from None
            self.add(svc)
            names.append(svc.name)
        return names


def service_to_mapping(service: Service) -> dict:
    """A service as a JSON-ready dict (tuples become lists)."""
    out = asdict(service)
    for key in ("regions", "hosts", "dependencies"):
        out[key] = list(out[key])
    return out


def service_from_mapping(raw: object) -> Service:
    """A :class:`Service` from a mapping (a ``[[services]]`` table or an API body).

    Raises
    ------
    ConfigError
        Naming the field that is missing or of the wrong type.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a service must be an object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("a service needs a non-empty string 'name'")
    lists = {}
    for key in ("regions", "hosts", "dependencies"):
        value = raw.get(key, ())
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
            isinstance(v, str) for v in value
        ):
            raise ConfigError(f"service {name!r}: {key!r} must be a list of strings, got {value!r}")
        lists[key] = tuple(value)
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ConfigError(f"service {name!r}: 'weight' must be a non-negative number, got {weight!r}")
    unknown = sorted(set(raw) - {"name", "owner", "tier", "regions", "hosts", "dependencies", "weight"})
    if unknown:
        raise ConfigError(f"service {name!r}: unknown fields {unknown!r}")
    return Service(
        name=name,
        owner=str(raw.get("owner", "unknown")),
        tier=str(raw.get("tier", "unknown")),
        weight=float(weight),
        **lists,
    )


def event_from_mapping(raw: object) -> ChangeEvent:
    """A :class:`ChangeEvent` from a mapping with ``ts``, ``service``, ``kind`` and
    optional ``description`` and ``region``.

    Raises
    ------
    ConfigError
        Naming the field that is missing or of the wrong type.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a change event must be an object, got {type(raw).__name__}")
    ts = raw.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise ConfigError(f"change event: 'ts' must be integer milliseconds, got {ts!r}")
    service, kind = raw.get("service"), raw.get("kind")
    if not isinstance(service, str) or not service:
        raise ConfigError(f"change event: 'service' must be a non-empty string, got {service!r}")
    kind = EVENT_KIND_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in EVENT_KINDS:
        raise ConfigError(f"change event kind {kind!r} is not one of {list(EVENT_KINDS)!r}")
    description, region = raw.get("description", ""), raw.get("region")
    if not isinstance(description, str):
        raise ConfigError(f"change event: 'description' must be a string, got {description!r}")
    if region is not None and not isinstance(region, str):
        raise ConfigError(f"change event: 'region' must be a string, got {region!r}")
    return ChangeEvent(ts, service, kind, description, region or None)


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def from_config(raw: Mapping) -> Catalogue:
    """A catalogue from the ``[[services]]`` tables of a config."""
    cat = Catalogue()
    for i, s in enumerate(raw.get("services", [])):
        if isinstance(s, Mapping) and "name" not in s:
            raise ConfigError(f"services[{i}]: 'name' is required")
        try:
            cat.add(service_from_mapping(s))
        except ConfigError as exc:
            raise ConfigError(f"services[{i}]: {exc}") from None
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
