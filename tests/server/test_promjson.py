"""Value strings of the query API, as a live Prometheus 2.42.0 writes them.

Every expected string below was read from Debian's prometheus 2.42.0+ds
answering ``/api/v1/query?query=vector(X)`` (and ``scalar(vector(X))``) for
the X shown; tests/store/test_promql_vs_prometheus.py compares whole answers.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from obscore.server.promjson import format_scalar, format_value, query_data

# (value, string in a vector or matrix)
SAMPLE_STRINGS = [
    (0.0, "0"),
    (-0.0, "-0"),
    (1e20, "100000000000000000000"),
    (123456789012345678.0, "123456789012345680"),
    (1e21, "1e+21"),
    (999999999999999999999.0, "1e+21"),
    (-1e21, "-1e+21"),
    (6.666666666666596e298, "6.666666666666596e+298"),
    (1e-6, "0.000001"),
    (9.99e-7, "9.99e-07"),
    (1.5e-7, "1.5e-07"),
    (5e-324, "5e-324"),
    (float("inf"), "+Inf"),
    (float("-inf"), "-Inf"),
    (float("nan"), "NaN"),
]


@pytest.mark.parametrize(("value", "text"), SAMPLE_STRINGS)
def test_sample_values_are_written_as_prometheus_writes_them(value, text):
    assert format_value(value) == text


def test_scalar_values_never_use_an_exponent():
    # Prometheus' Scalar marshals with FormatFloat(v, 'f', -1, 64).
    assert format_scalar(1e22) == "10000000000000000000000"
    assert format_scalar(1.5e-7) == "0.00000015"
    table = pa.table({"ts": [1_000_000], "value": [1e22]})
    table = table.replace_schema_metadata({b"promql_result_type": b"scalar"})
    assert query_data(table, is_range=False) == {
        "resultType": "scalar",
        "result": [1000, "10000000000000000000000"],
    }
    vector = table.replace_schema_metadata({b"promql_result_type": b"vector"})
    assert query_data(vector, is_range=False)["result"][0]["value"] == [1000, "1e+22"]
