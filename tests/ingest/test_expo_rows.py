"""The native row split of expositions against its specification, the regexes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obscore._native.expo import expo_split_rows
from obscore.ingest.exposition import _ROWS_OM, _ROWS_PROM


def _rows(text: str, om: bool) -> list[tuple[str, ...]]:
    return (_ROWS_OM if om else _ROWS_PROM).findall(text)


@pytest.mark.parametrize("om", [False, True])
def test_expo_split_equals_findall_on_real_dumps_and_conformance_cases(shared_data, om):
    texts = [p.read_text() for p in sorted((shared_data / "exposition" / "real").iterdir())]
    for case in sorted((shared_data / "exposition" / "openmetrics").iterdir()):
        for p in sorted(case.iterdir()):
            if p.name != "test.json" and p.is_file():
                texts.append(p.read_bytes().decode("utf-8", errors="surrogateescape"))
    assert len(texts) > 100
    for text in texts:
        assert expo_split_rows(text, om) == _rows(text, om)


LINE = st.one_of(
    st.sampled_from([
        'up 1', 'up{job="a"} 1', 'up{job="a",} 1 1700000000', 'up{} 1', 'up{job="a",x="y"} +Inf',
        'a_b:c{le="0.5"} 1e-3 -5', 'x 1 2.5', 'x{a="b\\"c"} 1', 'x{a="q"} NaN 17',
        '# HELP up The up metric.', '# TYPE up counter', '# UNIT up seconds', '# HELP up',
        '#  HELP up x', '# EOF', '', ' up 1', 'up  1', 'up 1 ', '9up 1', 'up{9="a"} 1',
        'up{a="1",,b="2"} 1', 'up{a=1} 1', 'up{a="1"', 'up 1 x', 'up 1 -', 'up{a="é"} 1',
    ]),
    st.text(alphabet='ab_:{}="\\,.+-# 019eEHLPTYUNI', max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(LINE, max_size=8), trailing=st.booleans(), om=st.booleans())
def test_expo_split_equals_findall_on_generated_lines(lines, trailing, om):
    text = "\n".join(lines) + ("\n" if trailing else "")
    assert expo_split_rows(text, om) == _rows(text, om)


def test_expo_split_empty_text_gives_one_empty_row():
    assert expo_split_rows("", False) == [("",) * 9] == _rows("", False)
