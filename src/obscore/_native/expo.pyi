"""Type stub for obscore._native.expo (exposition text split into rows)."""

from __future__ import annotations

def expo_split_rows(
    text: str,  # str, the whole exposition
    om: bool,  # bint: OpenMetrics rules
) -> list[tuple[str, str, str, str, str, str, str, str, str]]: ...
