"""Side by side: obscore's router against a live Alertmanager 0.25.

The same configuration (written as JSON, which Alertmanager's YAML loader
reads) drives both; the same timed stream of alerts, silences and a silence
expiry goes to both; the webhook bodies Alertmanager sends are compared with
the notifications the router produces.

Timing is laid out so that races cannot decide the outcome: every post,
silence and expiry happens on a whole second after the start, every group is
created on a whole second, and with ``group_wait`` 1.5 s and
``group_interval`` 2 s every flush falls on a half second.  ``repeat_interval``
is 9 s, not a multiple of the interval, so a repeat never hinges on
sub-millisecond timer drift.  Groups never empty and refill (Alertmanager
sweeps empty groups every 30 s at a time we cannot see).
"""

from __future__ import annotations

import http.server
import json
import logging
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict

import pytest

from obscore.alert.route import Router, format_rfc3339

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
TICK_MS = 500  # timing tolerance: one evaluation tick
STREAM_S = 40
TAIL_S = 4
MAX_LATE_MS = 250  # an event this late is still 250 ms away from any flush


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(hook_url: str) -> dict:
    return {
        "route": {
            "receiver": "web",
            "group_by": ["alertname"],
            "group_wait": "1500ms",
            "group_interval": "2s",
            "repeat_interval": "9s",
            "routes": [
                {
                    "matchers": ['team="db"'],
                    "receiver": "web",
                    "group_by": ["alertname", "instance"],
                    "continue": True,
                },
                {
                    "matchers": ['team=~"db|api"'],
                    "receiver": "quiet",
                    "group_by": ["..."],
                },
            ],
        },
        "receivers": [
            {
                "name": "web",
                "webhook_configs": [{"url": hook_url + "/web", "send_resolved": True}],
            },
            {
                "name": "quiet",
                "webhook_configs": [
                    {"url": hook_url + "/quiet", "send_resolved": False}
                ],
            },
        ],
        "inhibit_rules": [
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["cluster"],
            }
        ],
    }


def _stream(seed: int = 7) -> list[tuple[int, str, object]]:
    """Events ``(second, kind, data)``: kind is post, silence or expire."""
    rng = random.Random(seed)
    lives: list[tuple[dict, list[tuple[int, int | None]]]] = []
    for name in ("HighLatency", "ErrorRate", "DiskFull"):  # anchors: always firing
        lives.append(
            (
                {
                    "alertname": name,
                    "team": "ops",
                    "instance": "anchor",
                    "severity": "warning",
                    "cluster": "c9",
                },
                [(0, None)],
            )
        )
    for name in (
        "HighLatency",
        "ErrorRate",
        "DiskFull",
    ):  # web: fire, resolve, fire again
        for i in range(4):
            start = rng.randint(0, 12)
            end = rng.randint(start + 4, 30)
            spans = [(start, end)]
            if rng.random() < 0.5:
                spans.append((end + rng.randint(3, 6), None))
            lives.append(
                (
                    {
                        "alertname": name,
                        "team": "web",
                        "instance": f"i{i}",
                        "severity": "warning",
                        "cluster": f"c{1 + i % 2}",
                    },
                    spans,
                )
            )
    for name in ("HighLatency", "DiskFull"):  # db: two routes, fire once
        for i in range(2):
            start = rng.randint(2, 15)
            end = rng.randint(start + 4, 36) if rng.random() < 0.5 else None
            lives.append(
                (
                    {
                        "alertname": name,
                        "team": "db",
                        "instance": f"d{i}",
                        "severity": "warning",
                        "cluster": f"c{1 + i % 2}",
                    },
                    [(start, end)],
                )
            )
    for i in range(3):
        end = 20 if i == 0 else None
        lives.append(
            (
                {
                    "alertname": "ErrorRate",
                    "team": "api",
                    "instance": f"a{i}",
                    "severity": "warning",
                    "cluster": f"c{1 + i % 2}",
                },
                [(3 + i, end)],
            )
        )
    lives.append(
        (
            {
                "alertname": "Down",
                "team": "ops",
                "instance": "lb",
                "severity": "critical",
                "cluster": "c1",
            },
            [(10, 24)],
        )
    )

    events: list[tuple[int, str, object]] = []
    for k in range(STREAM_S):
        batch = []
        for labels, spans in lives:
            for start, end in spans:
                body = {
                    "labels": labels,
                    "annotations": {"summary": f"{labels['alertname']} at {k}"},
                    "start_k": start,
                }
                if k == end:
                    batch.append({**body, "end_k": end})
                elif (start <= k and (end is None or k < end)) and (
                    k == start or rng.random() < 0.6
                ):
                    batch.append(body)
        if batch:
            events.append((k, "post", batch))
    events.append((5, "silence", ("s1", ['alertname="ErrorRate"', 'team="web"'], 17)))
    events.append((8, "silence", ("s2", ['instance=~"d.*"'], 60)))
    events.append((26, "expire", "s2"))
    order = {"silence": 0, "expire": 1, "post": 2}
    return sorted(events, key=lambda e: (e[0], order[e[1]]))


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[int, dict]] = []  # noqa: RUF012 (reset per test)
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.received.append((int(time.time() * 1000), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def alertmanager(tmp_path):
    if BINARY is None:
        pytest.skip(
            "prometheus-alertmanager not installed (apt-get install -y prometheus-alertmanager)"
        )
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port = _free_port()
    config = _config(f"http://127.0.0.1:{hook.server_address[1]}")
    (tmp_path / "alertmanager.yml").write_text(json.dumps(config))
    log = open(tmp_path / "am.log", "wb")  # noqa: SIM115 (closed in the finaliser)
    proc = subprocess.Popen(
        [
            BINARY,
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--web.external-url=http://127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(
                f"alertmanager did not start: {(tmp_path / 'am.log').read_text()[-2000:]}"
            )
        yield base, config
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        hook.shutdown()
        hook.server_close()


def _request(url: str, body=None, method: str = "POST") -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read()
    return json.loads(text) if text.strip() else {}


def _shape(receiver, group_key, alerts):
    return (receiver, group_key, tuple(sorted(alerts)))


def test_router_matches_alertmanager_notifications(alertmanager):
    base, config = alertmanager
    router = Router(config)
    events = _stream()
    n_alerts = sum(len(d) for _, kind, d in events if kind == "post")
    assert n_alerts >= 200

    start_ms = (int(time.time()) + 2) * 1000
    ours = []
    ids: dict[str, str] = {}
    late_ms = 0
    for k, kind, data in events:
        at_ms = start_ms + k * 1000
        time.sleep(max(0.0, at_ms / 1000 - time.time()))
        now_ms = int(time.time() * 1000)
        late_ms = max(late_ms, now_ms - at_ms)
        ours += router.tick(now_ms)
        if kind == "post":
            body = []
            for a in data:
                item = {
                    "labels": a["labels"],
                    "annotations": a["annotations"],
                    "startsAt": format_rfc3339(start_ms + a["start_k"] * 1000),
                }
                if "end_k" in a:
                    item["endsAt"] = format_rfc3339(start_ms + a["end_k"] * 1000)
                body.append(item)
            _request(base + "/api/v2/alerts", body)
            router.post(body, now_ms)
        elif kind == "silence":
            name, matchers, end_k = data
            end_ms = start_ms + end_k * 1000
            api = []
            for text in matchers:
                n, rest = text.split("=", 1)
                is_regex = rest.startswith("~")
                api.append(
                    {
                        "name": n,
                        "value": json.loads(rest.lstrip("~")),
                        "isRegex": is_regex,
                        "isEqual": True,
                    }
                )
            sid = _request(
                base + "/api/v2/silences",
                {
                    "matchers": api,
                    "startsAt": format_rfc3339(now_ms),
                    "endsAt": format_rfc3339(end_ms),
                    "createdBy": "test",
                    "comment": name,
                },
            )["silenceID"]
            ids[name] = sid
            router.add_silence(
                matchers, end_ms, now_ms, author="test", comment=name, silence_id=sid
            )
        else:
            _request(f"{base}/api/v2/silence/{ids[data]}", method="DELETE")
            router.expire_silence(ids[data], now_ms)

    cutoff_ms = start_ms + (STREAM_S + TAIL_S) * 1000
    time.sleep(max(0.0, cutoff_ms / 1000 - time.time() + 0.4))
    ours += router.tick(cutoff_ms)
    with _Hook.lock:
        theirs_raw = [(t, b) for t, b in _Hook.received if t <= cutoff_ms]

    def key_of(labels):
        return tuple(sorted(labels.items()))

    theirs = defaultdict(list)
    for t, b in sorted(theirs_raw, key=lambda x: x[0]):
        alerts = [(key_of(a["labels"]), a["status"]) for a in b["alerts"]]
        theirs[(b["receiver"], b["groupKey"])].append(
            (t, _shape(b["receiver"], b["groupKey"], alerts))
        )
    mine = defaultdict(list)
    for n in ours:
        alerts = [
            (key_of(a.labels), "firing" if n.is_firing(a) else "resolved")
            for a in n.alerts
        ]
        mine[(n.receiver, n.group_key)].append(
            (n.ts_ms, _shape(n.receiver, n.group_key, alerts))
        )

    if late_ms > MAX_LATE_MS:
        # The comparison rests on every event sitting 500 ms from every flush;
        # a starved test process breaks that premise, not the router.
        pytest.skip(
            f"machine too loaded: an event ran {late_ms} ms late (limit {MAX_LATE_MS})"
        )
    problems, worst_ms = [], 0
    for gk in sorted(set(theirs) | set(mine)):
        a, b = theirs.get(gk, []), mine.get(gk, [])
        if [s for _, s in a] != [s for _, s in b]:
            problems.append(
                f"{gk}: alertmanager sent {len(a)}, obscore {len(b)}:\n"
                f"  am={[((t - start_ms), s[2]) for t, s in a]}\n"
                f"  ob={[((t - start_ms), s[2]) for t, s in b]}"
            )
            continue
        for (ta, _), (tb, _) in zip(a, b):
            worst_ms = max(worst_ms, abs(ta - tb))
            if abs(ta - tb) > TICK_MS:
                problems.append(
                    f"{gk}: sent at {ta - start_ms} ms vs {tb - start_ms} ms"
                )
    n_theirs = sum(map(len, theirs.values()))
    n_mine = sum(map(len, mine.values()))
    logger.info(
        "side by side: %d alerts posted; notifications: alertmanager %d, obscore %d, "
        "groups %d; %d differences; largest time gap %d ms",
        n_alerts,
        n_theirs,
        n_mine,
        len(theirs),
        len(problems),
        worst_ms,
    )
    assert not problems, "\n".join(problems)
    assert n_theirs == n_mine and n_mine >= 20
