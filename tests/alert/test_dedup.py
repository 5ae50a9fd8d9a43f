from __future__ import annotations

import pytest

from obscore.alert import AlertBook, fingerprint, severity

M = 60_000


def test_fingerprint_ignores_label_order_and_differs_by_value():
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})
    assert len(fingerprint({})) == 16


def test_dedup_folds_same_fingerprint_within_15m():
    book = AlertBook(15 * M)
    labels = {"alertname": "x", "service": "auth"}
    a, new = book.raise_alert(labels, 0, 2 * M, 0.9, "first")
    assert new
    b, new = book.raise_alert(
        labels, 16 * M, 17 * M, 0.95, "again"
    )  # 14m after the end
    assert not new and b is a and a.count == 2 and a.end_ms == 17 * M
    c, new = book.raise_alert(labels, 40 * M, 41 * M, 0.9, "later")  # 23m after
    assert new and c is not a
    assert len(book.alerts) == 2 and book.folded == 1


def test_dedup_keeps_different_fingerprints_apart():
    book = AlertBook(15 * M)
    book.raise_alert({"service": "a"}, 0, M, 0.9, "a")
    _, new = book.raise_alert({"service": "b"}, 0, M, 0.9, "b")
    assert new and len(book.alerts) == 2


@pytest.mark.parametrize(
    ("score", "duration", "breadth", "weight"),
    [
        (0.0, 0, 1, 1.0),
        (1.0, 10**9, 100, 5.0),
        (0.5, 60_000, 2, 1.0),
        (float("nan"), 0, 0, 1.0),
    ],
)
def test_severity_stays_in_unit_interval(score, duration, breadth, weight):
    s = severity(score, duration, breadth, weight)
    assert 0.0 <= s <= 1.0


def test_severity_grows_with_score_duration_and_breadth():
    base = severity(0.7, 60_000, 1)
    assert severity(0.9, 60_000, 1) > base
    assert severity(0.7, 600_000, 1) > base
    assert severity(0.7, 60_000, 4) > base


def test_similarity_dedup_folds_region_variants_and_keeps_members():
    from obscore.alert.dedup import similarity

    book = AlertBook(15 * M, similarity_threshold=0.8)
    eu = {"alertname": "error_rate_anomaly", "service": "db", "region": "eu"}
    us = {**eu, "region": "us"}
    a, _ = book.raise_alert(eu, 0, M, 0.9, "error_rate of db above its range")
    b, new = book.raise_alert(us, 2 * M, 3 * M, 0.9, "error_rate of db above its range")
    assert not new and b is a and set(a.members) == {fingerprint(us)}
    assert a.members[fingerprint(us)].labels == us
    assert (a.members[fingerprint(us)].start_ms, a.members[fingerprint(us)].end_ms) == (2 * M, 3 * M)
    # alertname 3 + service 1 agree out of 5 (region differs), same words
    assert similarity(eu, "x", us, "x") == pytest.approx(0.7 * 4 / 5 + 0.3)
    # a repeat of the folded fingerprint lands on the same alert
    c, new = book.raise_alert(us, 5 * M, 6 * M, 0.9, "error_rate of db above its range")
    assert not new and c is a and a.count == 3
    assert a.members[fingerprint(us)].end_ms == 6 * M and a.members[fingerprint(us)].count == 2
    assert a.firing_members(5 * M) == [fingerprint(us)] and a.firing_members(6 * M) == []


def test_similarity_ignores_description_words_that_repeat_the_labels():
    from obscore.alert.dedup import similarity

    db = {"alertname": "error_rate_anomaly", "error_type": "timeout", "service": "db"}
    auth = {**db, "service": "auth"}
    # the descriptions differ only where the labels do: counted once, in the labels
    sim = similarity(db, 'error_rate{service="db"} above', auth, 'error_rate{service="auth"} above')
    assert sim == pytest.approx(0.7 * 4 / 5 + 0.3)
    assert similarity(db, "above its range", auth, "below its range") == pytest.approx(
        0.7 * 4 / 5 + 0.3 * 2 / 4
    )


def test_similarity_dedup_folds_a_symptom_spreading_through_members_within_15m():
    from obscore.alert.dedup import similarity

    # each alert is similar to the one before, not to the first: all fold into one
    book = AlertBook(15 * M, similarity_threshold=0.8)
    base = {"alertname": "request_latency_anomaly", "region": "eu", "service": "db"}
    steps = [base, {**base, "region": "us"}, {**base, "region": "us", "service": "auth"},
             {**base, "region": "ap", "service": "auth"}]
    news = [book.raise_alert(lab, k * M, k * M + M, 0.9, "latency up")[1] for k, lab in enumerate(steps)]
    assert news == [True, False, False, False]
    assert similarity(steps[0], "latency up", steps[2], "latency up") < 0.8  # only via a member
    (alert,) = book.alerts
    assert [m.labels for m in alert.members.values()] == steps[1:]
    assert alert.end_ms == 4 * M and book.folded_by_similarity == 3
    # once everything is over 15m, the same symptom is a new alert
    _, new = book.raise_alert(steps[3], 20 * M, 21 * M, 0.9, "latency up")
    assert new and len(book.alerts) == 2


def test_similarity_dedup_keeps_incidents_of_members():
    book = AlertBook(15 * M, similarity_threshold=0.8)
    eu = {"alertname": "x", "service": "db", "region": "eu", "host": "h1"}
    a, _ = book.raise_alert(eu, 0, M, 0.9, "x up", incident_id=1)
    book.raise_alert({**eu, "region": "us"}, M, 2 * M, 0.9, "x up", incident_id=2)
    assert a.incident_ids == {1, 2} and a.incident_id == 1


def test_similarity_dedup_never_folds_different_alert_names():
    book = AlertBook(15 * M, similarity_threshold=0.5)
    book.raise_alert({"alertname": "a", "service": "db"}, 0, M, 0.9, "same words")
    _, new = book.raise_alert({"alertname": "b", "service": "db"}, 0, M, 0.9, "same words")
    assert new and len(book.alerts) == 2


def test_similarity_index_finds_what_comparing_with_every_alert_finds():
    import random

    from obscore.alert.dedup import SIMILARITY_EPS, SimilarityIndex, similarity

    rng = random.Random(3)
    for threshold in (0.2, 0.6, 0.8, 0.9):
        items = []
        index = SimilarityIndex(lambda it: it[2])
        for k in range(400):
            labels = {"alertname": f"a{rng.randrange(3)}"}
            for name in ("service", "region", "host", "team")[: rng.randrange(5)]:
                labels[name] = f"{name}{rng.randrange(3)}"
            summary = rng.choice(["disk full", "disk almost full", "latency high", ""])
            start = k * 1_000
            # the plain scan AlertBook did, oldest wins ties
            best, best_sim = None, threshold - SIMILARITY_EPS
            for it in reversed(items):
                if start - it[2] > 60_000:
                    continue
                sim = similarity(labels, summary, it[0], it[1])
                if sim >= best_sim:
                    best, best_sim = it, sim
            assert index.best(labels, summary, start, 60_000, threshold) is best
            it = (labels, summary, start)
            items.append(it)
            index.add(str(k), labels, summary, it)


def test_forget_drops_old_alerts_and_what_points_at_them():
    book = AlertBook(15 * M, similarity_threshold=0.8)
    eu = {"alertname": "error_rate_anomaly", "service": "db", "region": "eu"}
    us = {**eu, "region": "us"}
    old, _ = book.raise_alert(eu, 0, M, 0.9, "db errors")
    book.raise_alert(us, 2 * M, 3 * M, 0.9, "db errors")  # folded into old
    recent, _ = book.raise_alert({**eu, "service": "auth"}, 60 * M, 61 * M, 0.9, "x")
    assert book.forget(lambda al: al.end_ms < 30 * M) == 1
    assert book.alerts == [recent]
    assert book.forget(lambda al: al.end_ms < 30 * M) == 0
    # neither the fingerprint nor the folded member still finds the old alert
    again, new = book.raise_alert(us, 62 * M, 63 * M, 0.9, "db errors")
    assert new and again is not old and again.fingerprint == fingerprint(us)
    assert book.alerts == [recent, again]
