"""The simulated platform: services, regions, hosts and who calls whom.

A :class:`Platform` only describes the shape of the system. How busy, how fast
and how error-prone each service is lives in :mod:`obscore.sim.profile`, keyed
by service name, so a custom platform with other names still simulates (with
generic defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from obscore.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Platform:
    """Services deployed over regions, their hosts, call graph, endpoints and owners.

    Parameters
    ----------
    services : tuple of str
        Service names, unique.
    regions : tuple of str
        Region names, unique; every service runs in every region.
    hosts : dict
        ``(service, region) -> host names``; every pair has at least one host and
        host names are unique over the platform.
    dependencies : dict
        ``caller -> callees``; the graph must be acyclic. A service missing from
        the keys calls nothing.
    endpoints : dict
        ``service -> ((endpoint, method), ...)``, at least one per service.
    owners : dict
        ``service -> team``; services left out are owned by ``"unowned"``.

    Raises
    ------
    ConfigError
        When a name is repeated or unknown, a pair has no host, a service has no
        endpoint or the dependencies contain a cycle.

    Notes
    -----
    Equality compares every field; the hash uses services and regions only, so
    a platform can key a cache.
    """

    services: tuple[str, ...]
    regions: tuple[str, ...]
    hosts: dict[tuple[str, str], tuple[str, ...]]
    dependencies: dict[str, tuple[str, ...]]
    endpoints: dict[str, tuple[tuple[str, str], ...]]
    owners: dict[str, str]
    _host_index: dict[str, tuple[str, str]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _check_names("service", self.services)
        _check_names("region", self.regions)
        known = set(self.services)
        index: dict[str, tuple[str, str]] = {}
        for service in self.services:
            for region in self.regions:
                names = self.hosts.get((service, region), ())
                if not names:
                    raise ConfigError(
                        f"platform: service {service!r} has no host in region "
                        f"{region!r}; give every (service, region) pair a host"
                    )
                for host in names:
                    if host in index:
                        raise ConfigError(f"platform: host {host!r} is listed twice")
                    index[host] = (service, region)
        for pair in self.hosts:
            if pair[0] not in known or pair[1] not in self.regions:
                raise ConfigError(
                    f"platform: hosts are given for unknown pair {pair!r}"
                )

        for caller, callees in self.dependencies.items():
            if len(set(callees)) != len(callees):
                raise ConfigError(f"platform: {caller!r} lists a callee twice")
            for name in (caller, *callees):
                if name not in known:
                    raise ConfigError(
                        f"platform: dependency {caller!r} -> {callees!r} names "
                        f"unknown service {name!r}"
                    )
        _topological_order(self.services, self.dependencies)

        for service in self.services:
            if not self.endpoints.get(service):
                raise ConfigError(f"platform: service {service!r} has no endpoint")
        for name in (*self.endpoints, *self.owners):
            if name not in known:
                raise ConfigError(f"platform: unknown service {name!r}")
        object.__setattr__(self, "_host_index", index)

    def __hash__(self) -> int:
        return hash((self.services, self.regions))

    def callees(self, service: str) -> tuple[str, ...]:
        """Services that ``service`` calls directly (downstream)."""
        self._check_service(service)
        return tuple(self.dependencies.get(service, ()))

    def callers(self, service: str) -> tuple[str, ...]:
        """Services that call ``service`` directly (upstream), in platform order."""
        self._check_service(service)
        return tuple(
            s for s in self.services if service in self.dependencies.get(s, ())
        )

    def upstream(self, service: str) -> tuple[str, ...]:
        """Every service whose requests reach ``service``, nearest first.

        Callers come first, then their callers, and so on; each service once.
        """
        seen: list[str] = []
        frontier = [service]
        while frontier:
            nxt = []
            for name in frontier:
                for caller in self.callers(name):
                    if caller not in seen:
                        seen.append(caller)
                        nxt.append(caller)
            frontier = nxt
        return tuple(seen)

    def host_service(self, host: str) -> tuple[str, str]:
        """The ``(service, region)`` a host belongs to.

        Raises
        ------
        KeyError
            When the host is not part of the platform.
        """
        try:
            return self._host_index[host]
        except KeyError:
            raise KeyError(f"unknown host {host!r}") from None

    def owner(self, service: str) -> str:
        """The team owning ``service``, ``"unowned"`` when none is given."""
        self._check_service(service)
        return self.owners.get(service, "unowned")

    def topological_order(self) -> tuple[str, ...]:
        """Services with every caller before its callees (entry services first)."""
        return _topological_order(self.services, self.dependencies)

    def _check_service(self, service: str) -> None:
        if service not in self.services:
            raise KeyError(f"unknown service {service!r}")


def default_platform() -> Platform:
    """The demo platform: six services in three regions, two hosts per pair.

    ``gateway`` calls ``auth``, ``feed`` and ``upload``; ``feed`` calls
    ``recommend`` and ``db``; ``auth``, ``upload`` and ``recommend`` call ``db``.
    Hosts are named ``<service>-<region>-<n>``, e.g. ``feed-eu-west-1``.

    Returns
    -------
    Platform
    """
    services = ("gateway", "auth", "feed", "upload", "recommend", "db")
    regions = ("us-east", "eu-west", "ap-south")
    hosts = {
        (s, r): tuple(f"{s}-{r}-{n}" for n in (1, 2)) for s in services for r in regions
    }
    dependencies = {
        "gateway": ("auth", "feed", "upload"),
        "auth": ("db",),
        "feed": ("recommend", "db"),
        "upload": ("db",),
        "recommend": ("db",),
        "db": (),
    }
    endpoints = {
        "gateway": (("/api/feed", "GET"), ("/api/upload", "POST")),
        "auth": (("/login", "POST"),),
        "feed": (("/feed", "GET"),),
        "upload": (("/upload", "POST"),),
        "recommend": (("/recommend", "GET"),),
        "db": (("/query", "POST"),),
    }
    owners = {
        "gateway": "edge",
        "auth": "identity",
        "feed": "feed",
        "upload": "media",
        "recommend": "ml-platform",
        "db": "data",
    }
    return Platform(services, regions, hosts, dependencies, endpoints, owners)


def _check_names(what: str, names: tuple[str, ...]) -> None:
    if not names:
        raise ConfigError(f"platform: at least one {what} is needed")
    if len(set(names)) != len(names):
        raise ConfigError(f"platform: {what} names repeat in {names!r}")


def _topological_order(
    services: tuple[str, ...], dependencies: Mapping[str, tuple[str, ...]]
) -> tuple[str, ...]:
    # Kahn's algorithm in platform order, so the result is stable.
    waiting = {s: sum(s in dependencies.get(c, ()) for c in services) for s in services}
    order: list[str] = []
    ready = [s for s in services if waiting[s] == 0]
    while ready:
        service = ready.pop(0)
        order.append(service)
        for callee in dependencies.get(service, ()):
            waiting[callee] -= 1
            if waiting[callee] == 0:
                ready.append(callee)
    if len(order) != len(services):
        stuck = sorted(s for s in services if s not in order)
        raise ConfigError(f"platform: dependencies form a cycle through {stuck!r}")
    return tuple(order)
