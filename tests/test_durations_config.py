from __future__ import annotations

import pytest

from obscore.config import load_config
from obscore.durations import format_duration, parse_duration
from obscore.errors import ConfigError
from obscore.model import MetricKind


@pytest.mark.parametrize(
    ("text", "ms"),
    [("5m", 300_000), ("7d", 604_800_000), ("1h30m", 5_400_000), ("250ms", 250), ("0s", 0), (42, 42)],
)
def test_parse_duration_reads_units(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["5x", "", "m5", "5 m", "-5m", True])
def test_parse_duration_rejects_garbage(text):
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["99999999999999999999d", "1001y", 10**20])
def test_parse_duration_refuses_more_than_1000_years(text):
    assert parse_duration("1000y") == 1000 * 365 * 86_400_000
    with pytest.raises(ConfigError, match=r"is longer than 1000 years$"):
        parse_duration(text)


def test_a_silence_of_a_duration_too_long_is_refused_in_one_line(tmp_path, capsys):
    from obscore.cli import main

    (tmp_path / "d").mkdir()
    args = ["silence", "--data", str(tmp_path / "d"), "--matcher", "service=api",
            "--comment", "x", "--duration"]  # fmt: skip
    assert main([*args, "99999999999999999999d"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("'99999999999999999999d' is longer than 1000 years"), err
    assert "\n" not in err


def test_format_duration_round_trips():
    for ms in (1, 1000, 60_000, 5_400_000, 86_400_000 + 1):
        assert parse_duration(format_duration(ms)) == ms


def test_default_config_declares_the_platform_metrics():
    cfg = load_config()
    kinds = {name: spec.kind for name, spec in cfg.metrics.items()}
    assert kinds == {
        "cpu_usage": MetricKind.GAUGE,
        "memory_usage": MetricKind.GAUGE,
        "active_users": MetricKind.GAUGE,
        "network_throughput": MetricKind.COUNTER,
        "error_rate": MetricKind.COUNTER,
        "request_latency": MetricKind.HISTOGRAM,
        "content_engagement": MetricKind.HISTOGRAM,
    }
    assert cfg.metrics["request_latency"].bounds == (10, 50, 100, 200, 500, 1000)
    assert cfg.zscore_window_ms == 300_000 and cfg.zscore_threshold == 3.0
    assert cfg.dedup_window_ms == 900_000
    assert cfg.out_of_order_ms == 600_000 and cfg.max_future_ms == 600_000
    assert cfg.retention_ms == {"hot": 604_800_000, "warm": 2_592_000_000, "cold": 31_536_000_000}


def test_config_error_names_file_and_key(tmp_path):
    path = tmp_path / "obscore.toml"
    path.write_text('[detectors.zscore]\nwindow = "5x"\n')
    with pytest.raises(ConfigError, match=r"obscore.toml, detectors.zscore.window: '5x' is not a duration"):
        load_config(path)


def test_config_rejects_unsorted_buckets(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[metrics]]\nname = "lat"\nkind = "histogram"\nbuckets = [5, 1]\n')
    with pytest.raises(ConfigError, match=r"'lat'.*strictly increasing"):
        load_config(path)


def test_user_metrics_add_to_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[metrics]]\nname = "queue_depth"\nkind = "gauge"\nlabels = ["queue"]\n')
    cfg = load_config(path)
    assert "queue_depth" in cfg.metrics and "cpu_usage" in cfg.metrics


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[store]\nout_of_ordr_window = "5m"\n',
         "store.out_of_ordr_window: unknown key; did you mean 'out_of_order_window'? (known: "
         "hot_capacity, rollup_steps, out_of_order_window, max_future, on_conflict, "
         "wal_fsync, block_duration, warm_step, cold_step, compact_interval)"),
        ("[stor]\nhot_capacity = 5\n",
         "stor: unknown table; did you mean 'store'? (known: metrics, store, limits, retention, "
         "sampling, detectors, alerts, diagnosis, pipeline, escalation, remediation, scrape, "
         "services)"),
        ('[detectors.zscore]\nwindo = "5m"\n',
         "detectors.zscore.windo: unknown key; did you mean 'window'? (known: window, threshold)"),
        ('[[metrics]]\nname = "a"\nlables = ["x"]\n',
         "metrics[0].lables: unknown key; did you mean 'labels'? (known: name, kind, labels, "
         "buckets, help, unit, group, weight)"),
        ('[[metrics]]\nname = "a"\n\n[[metrics]]\nname = "a"\nkind = "counter"\n',
         "metrics[1]: metric 'a' is declared twice; keep one [[metrics]] table per name"),
    ],
    ids=["key", "table", "nested_key", "metric_key", "duplicate_metric"],
)
def test_config_refuses_unknown_keys_and_duplicate_metrics(tmp_path, toml, message):
    path = tmp_path / "obscore.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}, {message}"


def test_the_shipped_config_and_the_configs_of_the_docs_load(tmp_path):
    import re
    from importlib import resources
    from pathlib import Path

    load_config(resources.files("obscore").joinpath("obscore.toml"))
    docs = Path(__file__).parent.parent / "docs"
    blocks = [
        b for doc in sorted(docs.glob("*.md"))
        for b in re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S)
    ]
    assert len(blocks) >= 3
    for n, block in enumerate(blocks):
        path = tmp_path / f"doc{n}.toml"
        # the example's callable names a user's package, not one installed here
        path.write_text(block.replace('callable = "mypkg.ops:scale_out"', 'callable = "os:getcwd"'))
        load_config(path)


def test_a_bad_pipeline_duration_is_named_with_its_file_when_loaded(tmp_path):
    path = tmp_path / "obscore.toml"
    path.write_text('[pipeline]\nsettle = "abc"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}, pipeline.settle: 'abc' is not a duration; use e.g. '5m' or '300s'"
