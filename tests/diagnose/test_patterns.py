"""The pattern library: eight shipped kinds, user files, similarity, bad files."""

from __future__ import annotations

import pytest

from obscore.diagnose.patterns import Pattern, load_patterns, match
from obscore.errors import ConfigError


def test_shipped_library_has_the_eight_kinds_with_steps():
    names = {p.name for p in load_patterns()}
    assert names >= {"memory_leak", "cpu_saturation", "bad_deploy", "slow_dependency", "traffic_surge",
                     "connection_exhaustion", "error_storm", "noisy_neighbour"}
    assert all(p.steps and p.signature and p.cause_metric for p in load_patterns())


def test_user_file_adds_and_replaces_patterns(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[[patterns]]\nname = "memory_leak"\ncause_metric = "memory_usage"\n'
                 'signature = { "memory_usage_up" = 1 }\nsteps = ["Restart."]\n'
                 '[[patterns]]\nname = "disk_full"\ncause_metric = "disk_usage"\n'
                 'signature = { "disk_usage_up" = 1 }\n')
    pats = {p.name: p for p in load_patterns([f])}
    assert pats["memory_leak"].steps == ("Restart.",)
    assert "disk_full" in pats and len(pats) == len(load_patterns()) + 1


def test_similarity_is_the_weighted_share_present_and_not_counts_absence():
    p = Pattern("x", "cpu_usage", {"cpu_usage_up": 3, "not:network_throughput:rx_up": 1})
    assert p.similarity({"cpu_usage_up": 1.0}) == 1.0
    assert p.similarity({"cpu_usage_up": 1.0, "network_throughput:rx_up": 1.0}) == 0.75
    assert p.similarity({}) == 0.25
    best, sim = match(load_patterns(), {"memory_usage_up": 1, "trend:memory_usage": 1, "first:memory_usage": 1})[0]
    assert best.name == "memory_leak" and sim >= 0.8


def test_bad_pattern_files_name_the_file_and_entry(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[patterns]\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_patterns([bad])
    bad.write_text('[[patterns]]\nname = "x"\nsignature = { "a" = 1 }\n')
    with pytest.raises(ConfigError, match=r"bad.toml, patterns\[0\]: missing or bad field 'cause_metric'"):
        load_patterns([bad])
