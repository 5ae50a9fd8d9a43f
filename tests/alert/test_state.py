from __future__ import annotations

from obscore.alert.notify import Delivery
from obscore.alert.route import Router
from obscore.alert.state import StateDir

S = 1_000
CONFIG = {
    "route": {"receiver": "ops", "group_wait": "30s", "group_interval": "5m"},
    "receivers": [{"name": "ops", "send_resolved": True}],
}


class _Recorder:
    name = "recorder"

    def __init__(self):
        self.sent = []

    def send(self, note):
        self.sent.append(note.key)


def _boot(sd, recorder):
    router = Router(CONFIG)
    state = sd.load("router")
    if state is not None:
        router.restore(state)
    delivery = Delivery(
        recorder, on_delivered=lambda n: sd.save("delivery", delivery.state())
    )
    delivery.restore(sd.load("delivery", {}))
    return router, delivery


def test_restart_during_group_wait_sends_the_group_once(tmp_path):
    sd, rec = StateDir(tmp_path), _Recorder()
    router, delivery = _boot(sd, rec)
    router.post([{"labels": {"alertname": "A"}}], 0)
    delivery.submit(router.tick(10 * S), 10 * S)
    sd.save("router", router.state())  # then the process dies, 20 s before the flush

    router, delivery = _boot(sd, rec)
    delivery.submit(router.tick(31 * S), 31 * S)
    sd.save("router", router.state())
    router, delivery = _boot(sd, rec)
    delivery.submit(router.tick(60 * S), 60 * S)
    assert len(rec.sent) == 1


def test_crash_between_delivery_and_saving_the_router_does_not_resend(tmp_path):
    sd, rec = StateDir(tmp_path), _Recorder()
    router, delivery = _boot(sd, rec)
    router.post([{"labels": {"alertname": "A"}}], 0)
    sd.save("router", router.state())
    delivery.submit(
        router.tick(31 * S), 31 * S
    )  # delivered; router.json still pre-flush

    router, delivery = _boot(sd, rec)
    notes = router.tick(40 * S)  # the same flush at 30 s runs again...
    assert len(notes) == 1 and notes[0].ts_ms == 30 * S
    delivery.submit(notes, 40 * S)  # ...with the same key, which the log knows
    assert len(rec.sent) == 1


def test_silences_survive_a_restart(tmp_path):
    sd = StateDir(tmp_path)
    router = Router(CONFIG)
    sid = router.add_silence('alertname="A"', end_ms=600 * S, now_ms=0, author="me")
    sd.save("router", router.state())
    again = Router(CONFIG)
    again.restore(sd.load("router"))
    assert again.silences[sid].author == "me"
    again.post([{"labels": {"alertname": "A"}}], S)
    assert again.tick(120 * S) == []
