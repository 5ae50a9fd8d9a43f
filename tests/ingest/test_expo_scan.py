"""The native line loop of the exposition parser against its Python form.

``exposition._NATIVE_SCAN = False`` hands every line to ``_Parser._line``, the
parser's own Python loop; the native scan (``obscore._native.expo.ExpoScan``)
must give the same families, samples, exemplars and errors, and raise the same
message, on the real dumps, the OpenMetrics cases and generated expositions.
The native whole-family checks (``expo_groups_ok``, ``expo_histogram_ok``)
are held to the Python checks they shortcut the same way.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obscore.errors import InvalidSampleError
from obscore.ingest import exposition


def _outcome(text: str | bytes, **kwargs: object) -> tuple[object, ...]:
    """Everything a parse gives, NaN made comparable, or the error message."""
    try:
        r = exposition.parse(text, **kwargs)  # type: ignore[arg-type]
    except InvalidSampleError as exc:
        return ("error", str(exc))
    c = r._columns
    values = ["nan" if math.isnan(v) else v for v in c.values]
    return (
        r.format,
        r.n_lines,
        r._family_rows,
        c.names,
        c.label_dicts(0, len(c.labels)),
        values,
        c.ts,
        c.lines,
        c.keys,
        r.errors,
        r.exemplars,
    )


def _both(monkeypatch: pytest.MonkeyPatch, text: str | bytes, **kwargs: object) -> None:
    native = _outcome(text, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(exposition, "_NATIVE_SCAN", False)
        m.setattr(exposition, "expo_groups_ok", lambda *a: False)
        m.setattr(exposition, "expo_histogram_ok", lambda *a: False)
        python = _outcome(text, **kwargs)
    assert native == python


@pytest.mark.parametrize("lenient", [False, True])
def test_scan_equals_python_loop_on_real_dumps(shared_data, monkeypatch, lenient):
    for path in sorted((shared_data / "exposition" / "real").iterdir()):
        text = path.read_text()
        _both(monkeypatch, text, lenient=lenient)
        _both(monkeypatch, text, lenient=lenient, format="openmetrics")


@pytest.mark.parametrize("fmt", ["openmetrics", "prometheus"])
def test_scan_equals_python_loop_on_openmetrics_cases(shared_data, monkeypatch, fmt):
    cases = sorted((shared_data / "exposition" / "openmetrics").iterdir())
    assert len(cases) > 100
    for case in cases:
        for path in sorted(case.iterdir()):
            if path.name != "test.json" and path.is_file():
                data = path.read_bytes()
                _both(monkeypatch, data, format=fmt)
                _both(monkeypatch, data, format=fmt, lenient=True)


NAMES = [
    "a",
    "a_total",
    "a_bucket",
    "a_count",
    "a_sum",
    "a_created",
    "a_gsum",
    "a_gcount",
    "a_info",
    "b",
    "b_total",
]
TYPES = [
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
    "unknown",
    "untyped",
    "bogus",
]
LABELS = [
    "",
    "{}",
    '{x="1"}',
    '{x="2"}',
    '{le="1"}',
    '{le="+Inf"}',
    '{x="1",le="1"}',
    '{le="+Inf",x="1"}',
    '{x="1",x="2"}',
    '{quantile="0.5"}',
    '{a="x",}',
    '{a="é"}',
    '{x="1",y="2"}',
    '{y="2",x="1"}',
    '{a="b\\"c"}',
    '{le="-1"}',
    '{le="inf"}',
]
VALUES = ["1", "0", "-1", "2.5", "NaN", "+Inf", "-Inf", "1e3", "x", "1_0", "3"]
TIMES = [
    "",
    " 1",
    " -5",
    " 1700000000000",
    " 1700000600001",
    " 1.5",
    " 1e3",
    " 99999999999999999999",
    " 1e400",
    " x",
]
LINE = st.one_of(
    st.builds(
        lambda n, lab, v, t: f"{n}{lab} {v}{t}",
        st.sampled_from(NAMES),
        st.sampled_from(LABELS),
        st.sampled_from(VALUES),
        st.sampled_from(TIMES),
    ),
    st.builds(
        lambda n, t: f"# TYPE {n} {t}",
        st.sampled_from(["a", "b"]),
        st.sampled_from(TYPES),
    ),
    st.builds(
        lambda n, h: f"# HELP {n} {h}",
        st.sampled_from(["a", "b"]),
        st.sampled_from(["text", "with \\\\ and \\n", ""]),
    ),
    st.sampled_from(
        [
            "# UNIT a seconds",
            "# EOF",
            "",
            "# comment",
            'a_total 1 # {t="1"} 2',
            "a  1",
            " a 1",
        ]
    ),
)


@settings(max_examples=250, deadline=None)
@given(
    lines=st.lists(LINE, max_size=12),
    om=st.booleans(),
    lenient=st.booleans(),
    now=st.booleans(),
)
def test_scan_equals_python_loop_on_generated_expositions(lines, om, lenient, now):
    text = "\n".join(lines) + "\n"
    kwargs = {
        "format": "openmetrics" if om else "prometheus",
        "lenient": lenient,
        "now_ms": 1_700_000_000_000 if now else None,
    }
    with pytest.MonkeyPatch.context() as mp:
        _both(mp, text, **kwargs)


MUTATIONS = [
    "none",
    "none",
    "none",
    "swap",
    "decrease",
    "fraction",
    "no_inf",
    "count",
    "no_count",
    "repeat",
    "reorder",
    "ts_back",
    "bad_le",
    "negative_le",
    "mixed_ts",
]


@st.composite
def _histogram(draw: st.DrawFn, om: bool) -> str:
    """A histogram family, well-formed but for at most one mutation."""
    gauge = om and draw(st.booleans())
    typ = "gaugehistogram" if gauge else "histogram"
    count_name, sum_name = ("h_gcount", "h_gsum") if gauge else ("h_count", "h_sum")
    mutation = draw(st.sampled_from(MUTATIONS))
    all_series = ['x="1"', 'x="2"', 'y="1",x="3"', ""]
    series = draw(
        st.lists(st.sampled_from(all_series), min_size=1, max_size=3, unique=True)
    )
    if mutation == "repeat":
        series.append(series[0])
    lines = [f"# TYPE h {typ}"]
    for k, labels in enumerate(series):
        sep = "," if labels else ""
        ts = " 5" if draw(st.booleans()) or mutation == "ts_back" else ""
        if mutation == "ts_back" and k == len(series) - 1:
            ts = " 7"
        bounds = sorted(
            draw(st.sets(st.sampled_from(["-1", "0.5", "1", "2"]))), key=float
        )
        bounds.append("+Inf")
        rows, n = [], 0
        for le in bounds:
            n += draw(st.sampled_from([0, 1, 2]))
            rows.append([le, n])
        if mutation == "swap" and len(rows) > 1:
            rows[0][0], rows[1][0] = rows[1][0], rows[0][0]
        elif mutation == "decrease" and len(rows) > 1:
            rows[0][1] = rows[1][1] + 1
        elif mutation == "fraction":
            rows[-1][1] += 0.5
        elif mutation == "no_inf":
            rows.pop()
        elif mutation == "bad_le":
            rows[-1][0] = draw(st.sampled_from(["inf", "1_0", "Inf", "x"]))
        elif mutation == "negative_le" and rows[0][0] != "-1":
            rows.insert(0, ["-1", 0])
        for le, c in rows:
            lines.append(f'h_bucket{{{labels}{sep}le="{le}"}} {c}{ts}')
        if mutation == "reorder" and labels.count(",") == 1:
            a, b = labels.split(",")
            lines[-1] = lines[-1].replace(labels, f"{b},{a}")
        if mutation == "ts_back" and ts:
            lines[-1] = lines[-1][: -len(ts)] + " 4"
        if mutation == "mixed_ts" and ts:
            lines[-1] = lines[-1][: -len(ts)]
        total = n if mutation != "count" else n + 1
        if mutation != "no_count" or not om:
            lines.append(f"{count_name}{{{labels}}} {total}{ts}")
        lines.append(f"{sum_name}{{{labels}}} {draw(st.sampled_from(['1', '-1']))}{ts}")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(data=st.data(), om=st.booleans(), lenient=st.booleans())
def test_scan_equals_python_loop_on_generated_histograms(data, om, lenient):
    text = data.draw(_histogram(om)) + ("# EOF\n" if om else "")
    kwargs = {"format": "openmetrics" if om else "prometheus", "lenient": lenient}
    with pytest.MonkeyPatch.context() as mp:
        _both(mp, text, **kwargs)


def test_native_family_checks_pass_valid_histograms():
    # The shortcut is taken on a well-formed family (else it saves nothing).
    text = (
        '# TYPE h histogram\nh_bucket{y="1",x="a",le="0.5"} 1\nh_bucket{y="1",x="a",le="+Inf"} 2\n'
        'h_sum{x="a",y="1"} 3\nh_count{x="a",y="1"} 2\nh_bucket{x="b",le="+Inf"} 0\n'
    )
    c = exposition.parse(text)._columns
    args = (c.names, c.labels, c.ts, 0, 5)
    assert exposition.expo_groups_ok(*args, "le", "h_bucket", False)
    assert exposition.expo_histogram_ok(
        c.names, c.labels, c.values, c.ts, 0, 5, "h", False, False
    )
    # The same with the series of the +Inf bucket interrupted: not passed.
    args = (c.names[:1] + c.names[4:], c.labels[:1] + c.labels[4:], c.ts[:2], 0, 2)
    assert not exposition.expo_histogram_ok(
        args[0], args[1], [1.0, 0.0], args[2], 0, 2, "h", False, False
    )


WIDE = ",".join(f'l{i}="{i}"' for i in range(70))
LIMIT_CASES = [
    # Past the native limits (64 labels, 63-character tokens, 2**62 ms), the
    # scan hands the line back; the outcome must not change.
    f"a{{{WIDE}}} 1\n",
    f'a{{{WIDE},l3="x"}} 1\n',
    f'# TYPE h histogram\nh_bucket{{{WIDE},le="+Inf"}} 1\nh_count{{{WIDE}}} 1\n',
    "a " + "1" * 70 + "\n",
    "a 1 " + "9" * 19 + "\n",
    "a 1 -" + "9" * 25 + "\n",
    "a 1 4611686018427387905\n",
    'a{x="\u0100\u4e2d"} 1\nb{y="\U0001f600"} 2 5\n',
    "# HELP a \u4e2d\u6587 text\n# TYPE a counter\na 1\n",
]


@pytest.mark.parametrize("text", LIMIT_CASES)
@pytest.mark.parametrize("now", [None, 1_700_000_000_000, 2**63])
def test_scan_equals_python_loop_past_native_limits(monkeypatch, text, now):
    _both(monkeypatch, text, now_ms=now)
    _both(monkeypatch, text + "# EOF\n", now_ms=now, format="openmetrics")
