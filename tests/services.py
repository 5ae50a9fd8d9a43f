"""Real services for integration tests: Prometheus, node_exporter, ``obscore serve``.

Each launcher is a context manager that starts its process on 127.0.0.1 with a
free port and a data directory under the test's ``tmp_path``, waits until it
answers, yields its base URL and stops it (SIGTERM, then SIGKILL) on the way
out.  A missing binary skips the test with the Debian package to install.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
# Collectors that read /proc quickly without privileges (as in
# tests/ingest/test_scrape.py); the rest are off to keep the load low.
NODE_COLLECTORS = ("cpu", "loadavg", "meminfo", "netdev", "stat", "time", "vmstat")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def need(binary: str, package: str) -> str:
    """The binary's path; skips the test when it is not installed."""
    if not Path(binary).exists():
        pytest.skip(
            f"{binary} not found; install the Debian package {package!r} "
            "to run this test"
        )
    return binary


def get_json(base: str, path: str, **params: Any) -> Any:
    """GET ``base + path`` with ``params``; the decoded JSON body."""
    url = base + path
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=30) as res:
        return json.loads(res.read())


def _wait_ready(
    proc: subprocess.Popen, url: str, log: Path, what: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as res:
                if res.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what} did not answer on {url} in {timeout_s} s: {_tail(log)}"
            )
        time.sleep(0.1)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@contextlib.contextmanager
def _process(
    args: Sequence[str], log: Path, ready_url: str, what: str, timeout_s: float = 60
) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, ready_url, log, what, timeout_s)
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL when it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def node_exporter(tmp_path: Path) -> Iterator[str]:
    """A node_exporter; yields its ``host:port``."""
    binary = need(NODE_EXPORTER, "prometheus-node-exporter")
    port = free_port()
    args = [
        binary,
        f"--web.listen-address=127.0.0.1:{port}",
        "--collector.disable-defaults",
        *(f"--collector.{name}" for name in NODE_COLLECTORS),
    ]
    address = f"127.0.0.1:{port}"
    log = tmp_path / "node_exporter.log"
    with _process(args, log, f"http://{address}/metrics", "node_exporter"):
        yield address


@contextlib.contextmanager
def prometheus(
    tmp_path: Path,
    config: Mapping[str, Any],
    *,
    data_dir: Path | None = None,
    flags: Sequence[str] = (),
) -> Iterator[str]:
    """A Prometheus server on ``config`` (written as JSON, which YAML reads).

    ``data_dir`` (default ``tmp_path / "prometheus"``) is its TSDB; yields the
    base URL of its HTTP API.
    """
    binary = need(PROMETHEUS, "prometheus")
    port = free_port()
    data_dir = data_dir or tmp_path / "prometheus"
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(json.dumps(config))
    args = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        *flags,
    ]
    base = f"http://127.0.0.1:{port}"
    with _process(args, tmp_path / "prometheus.log", base + "/-/ready", "prometheus"):
        yield base


@contextlib.contextmanager
def obscore_serve(tmp_path: Path, *args: str) -> Iterator[str]:
    """``obscore serve`` in a subprocess with a data directory; yields its base URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "obscore.cli",
        "serve",
        "--data",
        str(tmp_path / "obscore"),
        "--port",
        str(port),
        *args,
    ]
    base = f"http://127.0.0.1:{port}"
    with _process(cmd, tmp_path / "obscore.log", base + "/-/ready", "obscore serve"):
        yield base
