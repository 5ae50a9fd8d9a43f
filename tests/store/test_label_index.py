"""The label index selects the same series as testing every label set.

The oracle is the obvious scan: every series of the index, its labels with
``__name__``, every matcher's ``matches``.  The index is checked over matchers
that accept the empty value (missing labels), regexes over the name, labels
that only some series carry, empty label values, and an index that grows,
shrinks and changes between selections.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings

from obscore.model import SeriesIndex
from obscore.store.query import LabelIndex, Matcher, QueryEngine


def scan(index: SeriesIndex, matchers: list[Matcher]) -> list[int]:
    found = []
    for sid in index:
        labels = index.labels(sid).with_(__name__=index.name(sid))
        if all(m.matches(labels) for m in matchers):
            found.append((labels.items_tuple, sid))
    return [sid for _, sid in sorted(found)]


def build(n: int) -> SeriesIndex:
    index = SeriesIndex()
    for i in range(n):
        labels = {"shard": f"s{i % 7}", "series": f"x{i}"}
        if i % 3 == 0:
            labels["zone"] = "" if i % 2 else f"z{i % 4}"  # missing, empty or set
        index.add("up" if i % 5 else "down", labels)
    return index


MATCHERS = [
    [Matcher("__name__", "=", "up")],
    [Matcher("__name__", "=", "up"), Matcher("series", "=", "x11")],
    [Matcher("__name__", "=", "up"), Matcher("shard", "=", "s3")],
    [Matcher("__name__", "=", "nope")],
    [Matcher("__name__", "=~", "up|down"), Matcher("shard", "!=", "s1")],
    [Matcher("__name__", "=~", ".+"), Matcher("zone", "=", "")],
    [Matcher("__name__", "=", "up"), Matcher("zone", "!=", "")],
    [Matcher("__name__", "=", "up"), Matcher("zone", "=~", "z1|")],
    [Matcher("__name__", "=", "up"), Matcher("zone", "!~", "z.*")],
    [Matcher("__name__", "=", "up"), Matcher("missing", "=~", ".*")],
    [Matcher("__name__", "=", "up"), Matcher("missing", "!=", "")],
    [Matcher("shard", "=~", "s[0-2]"), Matcher("series", "=~", "x1.*")],
    [Matcher("series", "!~", "x.*")],
    [Matcher("__name__", "!=", "up"), Matcher("shard", "=", "s0")],
    [Matcher("shard", "=~", "(?i)S1")],
]


def test_label_index_selects_what_the_scan_selects():
    index = build(300)
    engine = QueryEngine(index, lambda *a: None, {})
    for ms in MATCHERS:
        got = [sid for sid, _ in engine.series(ms)]
        assert got == scan(index, ms), ms


def test_label_index_follows_additions_and_discards():
    index = build(50)
    labels = LabelIndex(index)
    ms = [Matcher("__name__", "=", "up"), Matcher("shard", "=", "s2")]
    assert sorted(labels.select(ms)) == sorted(scan(index, ms))
    new = index.add("up", {"shard": "s2", "series": "late"})
    assert new in labels.select(ms)
    # a discard and an addition leave the length unchanged: still seen
    index.discard([new])
    other = index.add("up", {"shard": "s2", "series": "later"})
    assert new not in labels.select(ms) and other in labels.select(ms)
    assert sorted(labels.select(ms)) == sorted(scan(index, ms))
    assert labels.labels(other)["__name__"] == "up"
    assert labels.values("shard") == [f"s{i}" for i in range(7)]


def test_label_index_empty_index_and_no_matchers():
    index = SeriesIndex()
    labels = LabelIndex(index)
    assert labels.select([Matcher("__name__", "=", "up")]) == set()
    index.add("up", {"a": "1"})
    assert len(labels.select([])) == 1


def test_query_engine_select_keeps_index_order():
    index = build(100)
    engine = QueryEngine(index, lambda *a: None, {})
    got = engine.select("up", {"shard": "s4"})
    assert got == [s for s in index.ids("up") if index.labels(s)["shard"] == "s4"]


_values = st.sampled_from(["", "a", "b", "ab", "B"])
_matcher = st.builds(
    Matcher,
    st.sampled_from(["__name__", "k", "j"]),
    st.sampled_from(["=", "!=", "=~", "!~"]),
    st.sampled_from(["", "a", "b", "m", "n", "a|", ".*", ".+", "a.*", "(?i)b", "m|n"]),
)


@settings(max_examples=200, deadline=None)
@given(
    series=st.lists(
        st.tuples(
            st.sampled_from(["m", "n"]),
            st.dictionaries(st.sampled_from(["k", "j"]), _values, max_size=2),
        ),
        max_size=12,
    ),
    matchers=st.lists(_matcher, max_size=3),
)
def test_label_index_equals_scan_on_generated_series(series, matchers):
    index = SeriesIndex()
    labels = LabelIndex(index)
    half = len(series) // 2
    for name, lab in series[:half]:
        index.add(name, lab)
    labels.select(matchers)  # indexed once, then grown
    for name, lab in series[half:]:
        index.add(name, lab)
    got = [sid for sid, _ in labels.series(matchers)]
    assert got == scan(index, matchers)
