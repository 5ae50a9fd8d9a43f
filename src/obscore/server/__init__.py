"""``obscore serve``: the engine behind an HTTP API and a dashboard.

:func:`create_app` builds the ASGI application (Starlette); :func:`serve`
runs it with uvicorn after checking that the address is safe to listen on.
The endpoints are listed in :mod:`obscore.server.app`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from obscore.errors import ConfigError
from obscore.server.app import create_app

logger = logging.getLogger(__name__)

__all__ = ["create_app", "is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address.

    >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("::1")
    (True, False, True)
    """
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_listen(host: str, port: int) -> None:
    """Raise ConfigError naming the address when nothing can listen on it now
    (the port is taken, the host is no address of this machine)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(
    app: Any, host: str = "127.0.0.1", port: int = 9464, *, token: str | None = None
) -> None:
    """Run ``app`` with uvicorn until interrupted.

    Raises
    ------
    ConfigError
        When ``host`` is not a loopback address and no token is given: the
        write and admin endpoints would be open to the network.
    """
    import uvicorn

    if not token and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host!r} without a token: it is not a loopback "
            "address; pass --token (or listen on 127.0.0.1)"
        )
    check_listen(host, port)
    logger.info(
        "serving on http://%s:%d (token %s)", host, port, "required" if token else "off"
    )
    # NOTE: "auto" takes uvloop and httptools (dependencies on Linux and macOS):
    # with the pure-Python asyncio loop and h11, the event loop thread spent
    # ~45% of the server's CPU and waited for the GIL at each send under load;
    # benchmarks/test_server_load.py ingested 0.66-0.71 -> 1.19-1.30 M samples/s.
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="auto",
        http="auto",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
