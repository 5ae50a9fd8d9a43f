"""Tests for obscore.ingest.exposition: conformance, real dumps, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from obscore.errors import InvalidSampleError
from obscore.ingest.exposition import (
    ExpositionSample,
    format_from_content_type,
    parse,
    sniff_format,
)
from obscore.model import SAMPLE_SCHEMA, MetricKind, SeriesIndex, series_id

prometheus_parser = pytest.importorskip("prometheus_client.parser")

# shared/data/exposition/README.md: 169 OpenMetrics cases, 35 valid, 134 not.
N_OPENMETRICS_CASES = 169


def _cases(shared_data: Path) -> list[tuple[str, bytes, bool]]:
    root = shared_data / "exposition" / "openmetrics"
    out = []
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = json.loads((case / "test.json").read_text())
        out.append((case.name, (case / meta["file"]).read_bytes(), meta["shouldParse"]))
    return out


def _accepts(data: bytes) -> bool:
    try:
        parse(data, format="openmetrics")
    except InvalidSampleError:
        return False
    return True


def test_parse_openmetrics_conformance_cases_all_pass(shared_data: Path) -> None:
    cases = _cases(shared_data)
    failed = [name for name, data, expected in cases if _accepts(data) != expected]
    assert len(cases) == N_OPENMETRICS_CASES
    assert failed == [], f"{len(cases) - len(failed)} of {len(cases)} cases pass"


def test_parse_openmetrics_rejections_name_a_line(shared_data: Path) -> None:
    for name, data, expected in _cases(shared_data):
        if expected:
            continue
        with pytest.raises(InvalidSampleError, match=r"^line \d+: "):
            parse(data, format="openmetrics")


REAL_DUMPS = {
    # file: (families, samples) from shared/data/exposition/README.md, counted
    # by prometheus-client 0.26.0 text_string_to_metric_families.
    "node_exporter.prom": (283, 507),
    "prometheus.prom": (181, 471),
    "alertmanager.prom": (77, 288),
    "prometheus_federate.prom": (10, 74),
}


def _same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("name", sorted(REAL_DUMPS))
def test_parse_real_dump_matches_prometheus_client(
    shared_data: Path, name: str
) -> None:
    text = (shared_data / "exposition" / "real" / name).read_text()
    # prometheus-client gives seconds (ms / 1000) and keeps ints as int.
    expected = [
        (
            s.name,
            s.labels,
            float(s.value),
            None if s.timestamp is None else s.timestamp * 1000,
        )
        for fam in prometheus_parser.text_string_to_metric_families(text)
        for s in fam.samples
    ]
    result = parse(text)
    got = list(result.samples())
    assert (result.n_families, result.n_samples) == REAL_DUMPS[name]
    assert result.format == "prometheus" and result.errors == []
    assert [(s.name, s.labels) for s in got] == [(e[0], e[1]) for e in expected]
    assert all(_same_value(s.value, e[2]) for s, e in zip(got, expected))
    assert [s.ts_ms for s in got] == [
        None if e[3] is None else round(e[3]) for e in expected
    ]


def test_to_batch_real_dump_registers_every_series(shared_data: Path) -> None:
    text = (shared_data / "exposition" / "real" / "prometheus.prom").read_text()
    index = SeriesIndex()
    batch = parse(text).to_batch(index, default_ts_ms=1_000)
    assert batch.schema == SAMPLE_SCHEMA
    assert batch.num_rows == 471 and len(index) == 471
    assert set(batch["ts"].to_pylist()) == {1_000}


# --- grammar and mapping ---------------------------------------------------------


def test_parse_maps_families_to_metric_kinds() -> None:
    text = (
        "# TYPE c counter\nc_total 1\n# TYPE g gauge\ng 2\n"
        '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n'
        '# TYPE s summary\ns{quantile="0.5"} 1\ns_sum 2\ns_count 3\n'
        '# TYPE i info\ni_info{v="1"} 1\n# TYPE u unknown\nu 1\n# EOF\n'
    )
    result = parse(text)
    kinds = {f.name: (f.type, f.kind) for f in result.families}
    specs = {s.name: s.kind for s in result.specs()}
    assert result.format == "openmetrics"
    assert kinds == {
        "c": ("counter", MetricKind.COUNTER),
        "g": ("gauge", MetricKind.GAUGE),
        "h": ("histogram", MetricKind.HISTOGRAM),
        "s": ("summary", MetricKind.GAUGE),
        "i": ("info", MetricKind.GAUGE),
        "u": ("unknown", MetricKind.GAUGE),
    }
    assert (
        specs["c_total"] is MetricKind.COUNTER and specs["s_sum"] is MetricKind.COUNTER
    )
    assert specs["h"] is MetricKind.HISTOGRAM and specs["s"] is MetricKind.GAUGE
    assert next(s for s in result.specs() if s.name == "h").bounds == (1.0,)


def test_parse_unescapes_label_values_and_help() -> None:
    text = '# HELP a line\\nbreak \\\\ and \\"\na{x="q\\"b\\\\s\\nn",y="plain"} 1\n'
    result = parse(text)
    fam = result.families[0]
    assert fam.help == 'line\nbreak \\ and \\"'  # 0.0.4 HELP leaves \" alone
    assert fam.samples == [
        ExpositionSample("a", {"x": 'q"b\\s\nn', "y": "plain"}, 1.0, None)
    ]


def test_parse_keeps_nan_and_infinities() -> None:
    result = parse("a NaN\nb +Inf\nc -Inf\n")
    values = [s.value for s in result.samples()]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]


def test_parse_timestamps_are_ms_in_both_formats() -> None:
    prom = parse("a 1 1700000000123\n")
    om = parse("a 1 1700000000.123\n# EOF\n")
    assert next(prom.samples()).ts_ms == 1_700_000_000_123
    assert next(om.samples()).ts_ms == 1_700_000_000_123


def test_parse_prometheus_accepts_blanks_tabs_and_comments() -> None:
    text = '  # a comment\n\na\t1\t5\nb { x = "1" , }  2\r\n'
    samples = list(parse(text).samples())
    assert samples == [
        ExpositionSample("a", {}, 1.0, 5),
        ExpositionSample("b", {"x": "1"}, 2.0, None),
    ]


def test_parse_keeps_openmetrics_exemplars_apart() -> None:
    text = '# TYPE a counter\na_total 3 # {trace="t1"} 0.5 1.25\n# EOF\n'
    result = parse(text)
    (exemplar,) = result.exemplars
    assert result.n_samples == 1
    assert (exemplar.labels, exemplar.value, exemplar.ts_ms) == (
        {"trace": "t1"},
        0.5,
        1250,
    )


def test_sniff_and_content_type_pick_the_format() -> None:
    assert sniff_format("a 1\n# EOF\n") == "openmetrics"
    assert sniff_format("a 1\n") == "prometheus"
    assert (
        format_from_content_type("application/openmetrics-text; version=1.0.0")
        == "openmetrics"
    )
    assert (
        format_from_content_type("text/plain; version=0.0.4; charset=utf-8")
        == "prometheus"
    )
    assert format_from_content_type("application/json") is None


def test_to_batch_uses_series_ids_and_default_time() -> None:
    index = SeriesIndex()
    batch = parse('up{job="a"} 1\nup{job="b"} 0 5000\n').to_batch(index, 7_000)
    assert batch["series_id"].to_pylist() == [
        series_id("up", {"job": "a"}),
        series_id("up", {"job": "b"}),
    ]
    assert batch["ts"].to_pylist() == [7_000, 5_000]
    assert index.metric_names == ["up"]


def test_to_batch_without_default_time_names_the_line() -> None:
    result = parse("a 1 1000\nb 2\n")
    with pytest.raises(
        InvalidSampleError,
        match=r"^line 2: sample 'b' has no timestamp and no default_ts_ms was given$",
    ):
        result.to_batch(SeriesIndex())


def test_to_batch_cache_skips_known_series() -> None:
    index, cache = SeriesIndex(), {}
    first = parse('a{x="1"} 1\n').to_batch(index, 1, cache=cache)
    second = parse('a{x="1"} 2\n').to_batch(index, 2, cache=cache)
    assert first["series_id"].to_pylist() == second["series_id"].to_pylist()
    assert cache == {'a{x="1"}': series_id("a", {"x": "1"})}


# --- bad input -------------------------------------------------------------------


def test_parse_rejects_invalid_utf8_with_line_and_byte() -> None:
    data = b'# TYPE a gauge\na{x="\xff"} 1\n'
    with pytest.raises(
        InvalidSampleError,
        match=r"^line 2: invalid UTF-8 at byte 6 of the line \(0xff\); the exposition must be UTF-8 text$",
    ):
        parse(data)


def test_parse_rejects_a_10mb_line() -> None:
    text = "a 1\n" + "b" * (10 * 1024 * 1024) + " 1\n"
    with pytest.raises(
        InvalidSampleError,
        match=r"^line 2: line is 10485762 characters long, over the limit of 1048576 \(max_line_length\)$",
    ):
        parse(text)


def test_parse_rejects_a_negative_counter() -> None:
    with pytest.raises(
        InvalidSampleError,
        match=r"""^line 3: counter 'c' sample 'c\{x="1"\}' must not be negative, got -3.0$""",
    ):
        parse('# TYPE c counter\nc 1\nc{x="1"} -3\n')


def test_parse_rejects_decreasing_histogram_buckets() -> None:
    text = '# TYPE h histogram\nh_bucket{le="1"} 5\nh_bucket{le="2"} 3\nh_bucket{le="+Inf"} 6\n'
    with pytest.raises(
        InvalidSampleError,
        match=(
            r"^line 3: histogram 'h': bucket le='2' count 3.0 is below the count 5.0 of "
            r"le='1'; bucket counts are cumulative and must not decrease$"
        ),
    ):
        parse(text)


def test_parse_rejects_histogram_buckets_out_of_le_order() -> None:
    text = '# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\n'
    with pytest.raises(
        InvalidSampleError,
        match=r"^line 3: histogram 'h': bucket le='1' comes after le='2'; buckets must be in increasing order of le$",
    ):
        parse(text)


def test_parse_rejects_histogram_without_inf_bucket() -> None:
    text = '# TYPE h histogram\nh_bucket{le="1"} 5\nh_bucket{le="2"} 6\nh_sum 1\nh_count 6\n'
    with pytest.raises(
        InvalidSampleError,
        match=r"""^line 5: histogram 'h' series \{\} has no le="\+Inf" bucket$""",
    ):
        parse(text)


def test_parse_rejects_a_series_repeated_without_timestamp() -> None:
    with pytest.raises(
        InvalidSampleError,
        match=(
            r"""^line 3: duplicate series 'a\{x="1"\}', first seen at line 2; """
            r"a series may appear only once without a timestamp$"
        ),
    ):
        parse('# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n')


def test_parse_rejects_a_repeated_label_name() -> None:
    with pytest.raises(
        InvalidSampleError,
        match=r"""^line 1: a label name appears twice in 'a\{x="1",y="2",x="3"\}'$""",
    ):
        parse('a{x="1",y="2",x="3"} 1\n')


def test_parse_rejects_timestamp_more_than_10m_ahead_of_now() -> None:
    now_ms = 1_700_000_000_000
    assert (
        next(parse("a 1 1700000600000\n", now_ms=now_ms).samples()).ts_ms
        == now_ms + 600_000
    )
    with pytest.raises(
        InvalidSampleError,
        match=(
            r"^line 1: timestamp 1700000600001 ms of 'a' is 600001 ms ahead of now_ms "
            r"1700000000000; the limit is 600000 ms \(max_future_ms\)$"
        ),
    ):
        parse("a 1 1700000600001\n", now_ms=now_ms)


def test_parse_lenient_keeps_good_families_around_bad_lines() -> None:
    data = (
        b"# TYPE a gauge\na 1\n"
        b'b{x="\xff"} 2\n'
        b"c 3\n"
        b'd{x="1",x="2"} 4\n'
        b'# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\n'
        b"e 5\n"
    )
    result = parse(data, lenient=True)
    assert [f.name for f in result.families] == ["a", "c", "e"]
    assert [s.value for s in result.samples()] == [1.0, 3.0, 5.0]
    assert [line for line, _ in result.errors] == [3, 5, 8]
    assert result.errors[2][1].endswith("; family 'h' dropped")


def test_parse_lenient_batch_holds_only_good_rows() -> None:
    result = parse("a 1\nb x\nc 3\n", lenient=True)
    batch = result.to_batch(SeriesIndex(), 1)
    assert result.errors == [(2, "value 'x' of 'b' is not a number")]
    np.testing.assert_array_equal(batch["value"].to_numpy(), [1.0, 3.0])


def test_parse_openmetrics_requires_eof() -> None:
    with pytest.raises(
        InvalidSampleError,
        match=r"^line 2: missing '# EOF' at the end of an OpenMetrics exposition$",
    ):
        parse("a 1\n", format="openmetrics")
