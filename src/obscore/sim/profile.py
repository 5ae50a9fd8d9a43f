"""How busy, fast and error-prone each simulated service and region is.

The numbers are keyed by name. Names of the default platform get hand-picked
values; any other name gets the generic defaults of :class:`ServiceProfile`,
so a custom :class:`~obscore.sim.platform.Platform` simulates without extra
configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_KIB = 1024.0
_GIB = 1024.0**3


@dataclass(frozen=True, slots=True)
class EndpointProfile:
    """Baseline of one endpoint.

    ``share`` is the fraction of the service's requests it serves,
    ``latency_ms`` its median latency, ``waits`` the callees it calls with the
    share of its latency spent waiting on each (the sum stays below 1).
    """

    share: float
    latency_ms: float
    waits: dict[str, float]


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    """Baseline of one service; per-request sizes in bytes, fractions in [0, 1].

    ``latency_ms`` and ``wait_share`` describe endpoints that have no
    :class:`EndpointProfile`: that median latency, with ``wait_share`` of it
    spent on the callees, split evenly. ``entry_rps`` scales the region's
    outside traffic for services nobody calls.
    """

    latency_ms: float = 30.0
    wait_share: float = 0.45
    sigma: float = 0.5
    entry_rps: float = 1.0
    cpu_percent: float = 35.0
    memory_bytes: float = 2 * _GIB
    rx_bytes: float = 2 * _KIB
    tx_bytes: float = 8 * _KIB
    error_5xx: float = 0.002
    error_timeout: float = 0.0005


@dataclass(frozen=True, slots=True)
class RegionProfile:
    """Outside traffic of a region: requests per second at the daily mean, and
    the UTC hour of its evening peak."""

    rps: float = 220.0
    peak_hour: float = 20.0


@dataclass(frozen=True, slots=True)
class Profiles:
    """Every baseline the simulator reads, by name."""

    services: dict[str, ServiceProfile] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], EndpointProfile] = field(default_factory=dict)
    calls: dict[tuple[str, str], float] = field(default_factory=dict)
    regions: dict[str, RegionProfile] = field(default_factory=dict)

    def service(self, name: str) -> ServiceProfile:
        return self.services.get(name, ServiceProfile())

    def region(self, name: str, position: int) -> RegionProfile:
        if name in self.regions:
            return self.regions[name]
        # Spread unknown regions around the clock, 8 hours apart.
        return RegionProfile(peak_hour=(20.0 - 8.0 * position) % 24.0)

    def call_rate(self, caller: str, callee: str) -> float:
        """Calls to ``callee`` per request of ``caller``, averaged over endpoints."""
        return self.calls.get((caller, callee), 1.0)


DEFAULT_PROFILES = Profiles(
    services={
        "gateway": ServiceProfile(
            cpu_percent=35.0,
            memory_bytes=1.2 * _GIB,
            rx_bytes=32 * _KIB,
            tx_bytes=20 * _KIB,
            error_5xx=0.002,
            error_timeout=0.0004,
        ),
        "auth": ServiceProfile(
            latency_ms=20.0,
            wait_share=0.45,
            cpu_percent=25.0,
            memory_bytes=0.8 * _GIB,
            rx_bytes=0.8 * _KIB,
            tx_bytes=1.5 * _KIB,
            error_5xx=0.002,
            error_timeout=0.0004,
        ),
        "feed": ServiceProfile(
            cpu_percent=40.0,
            memory_bytes=2.0 * _GIB,
            rx_bytes=1.2 * _KIB,
            tx_bytes=16 * _KIB,
            error_5xx=0.002,
            error_timeout=0.0005,
        ),
        "upload": ServiceProfile(
            latency_ms=120.0,
            wait_share=0.35,
            cpu_percent=30.0,
            memory_bytes=1.5 * _GIB,
            rx_bytes=200 * _KIB,
            tx_bytes=1 * _KIB,
            error_5xx=0.003,
            error_timeout=0.001,
        ),
        "recommend": ServiceProfile(
            latency_ms=35.0,
            wait_share=0.4,
            cpu_percent=45.0,
            memory_bytes=3.0 * _GIB,
            rx_bytes=0.8 * _KIB,
            tx_bytes=4 * _KIB,
            error_5xx=0.0015,
            error_timeout=0.0005,
        ),
        "db": ServiceProfile(
            latency_ms=8.0,
            wait_share=0.0,
            sigma=0.45,
            cpu_percent=40.0,
            memory_bytes=6.0 * _GIB,
            rx_bytes=0.5 * _KIB,
            tx_bytes=3 * _KIB,
            error_5xx=0.001,
            error_timeout=0.0002,
        ),
    },
    endpoints={
        ("gateway", "/api/feed"): EndpointProfile(
            share=0.85, latency_ms=90.0, waits={"auth": 0.3, "feed": 0.3}
        ),
        ("gateway", "/api/upload"): EndpointProfile(
            share=0.15, latency_ms=170.0, waits={"auth": 0.25, "upload": 0.35}
        ),
        ("feed", "/feed"): EndpointProfile(
            share=1.0, latency_ms=60.0, waits={"recommend": 0.3, "db": 0.25}
        ),
    },
    calls={
        ("gateway", "auth"): 1.0,
        ("gateway", "feed"): 0.85,
        ("gateway", "upload"): 0.15,
        ("auth", "db"): 1.0,
        ("feed", "recommend"): 1.0,
        ("feed", "db"): 3.0,
        ("upload", "db"): 2.0,
        ("recommend", "db"): 2.0,
    },
    regions={
        "us-east": RegionProfile(rps=320.0, peak_hour=1.0),
        "eu-west": RegionProfile(rps=260.0, peak_hour=19.5),
        "ap-south": RegionProfile(rps=180.0, peak_hour=14.5),
    },
)
