"""Storage: the hot tier of ring buffers, rollup tiers and the query layer."""

from __future__ import annotations

from obscore.store.hot import HotStore, IngestResult

__all__ = ["HotStore", "IngestResult"]
