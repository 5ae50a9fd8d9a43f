"""Type stub for obscore._native.expo (exposition line loop and family checks)."""

from collections.abc import Callable
from typing import Any, TypeAlias

Row: TypeAlias = tuple[str, str, str, str, str, str, str, str, str]

def expo_split_rows(
    text: str,  # str, the whole exposition
    om: bool,  # bint: OpenMetrics rules
) -> list[Row]: ...
def expo_has_long_line(
    text: str,  # str, lines separated by "\n"
    limit: int,  # Py_ssize_t: most characters a line may have
) -> bool: ...
def expo_label_dicts(
    labels: list[Any],  # list of str (plain label text) or dict, converted in place
    start: int,  # Py_ssize_t
    stop: int,  # Py_ssize_t
) -> list[dict[str, str]]: ...
def expo_samples(
    cls: type[tuple[str, dict[str, str], float, int | None]],  # a NamedTuple class
    names: list[str],  # list
    labels: list[Any],  # list of str or dict, converted in place
    values: list[float],  # list
    ts: list[int | None],  # list
    start: int,  # Py_ssize_t
    stop: int,  # Py_ssize_t
) -> list[Any]: ...
def expo_groups_ok(
    names: list[str],  # list
    labels: list[Any],  # list of str or dict
    ts: list[int | None],  # list
    start: int,  # Py_ssize_t
    stop: int,  # Py_ssize_t
    drop: str | None,  # object: label left out of drop_name's series
    drop_name: str,  # str
    info: bool,  # bint
) -> bool: ...
def expo_histogram_ok(
    names: list[str],  # list
    labels: list[Any],  # list of str or dict
    values: list[float],  # list
    ts: list[int | None],  # list
    start: int,  # Py_ssize_t
    stop: int,  # Py_ssize_t
    name: str,  # str: family name
    gauge: bool,  # bint: gauge histogram
    om: bool,  # bint: OpenMetrics rules
) -> bool: ...

class ExpoScan:
    lineno: int  # Py_ssize_t: last line read, from 1
    fam_name: str | None  # object
    fam_type: str | None  # object
    fam_help: str | None  # object
    fam_unit: str | None  # object
    fam_line: int  # Py_ssize_t
    fam_start: int  # Py_ssize_t
    allowed: dict[str, str]  # dict: sample name -> suffix
    nonneg: frozenset[str]  # object
    notnan: frozenset[str]  # object
    seen_series: dict[str, int]  # dict: series text -> first line
    def __init__(
        self,
        text: str,  # str
        om: bool,  # bint
        names: list[str],  # list
        labels: list[Any],  # list
        values: list[float],  # list
        ts: list[int | None],  # list
        lines: list[int],  # list
        keys: list[str],  # list
        family_rows: list[tuple[str, str, str, str, int, int, int]],  # list
        seen_names: set[str],  # set
        suffix_table: dict[str, tuple[str, ...]],  # dict
        nonneg_table: dict[str, frozenset[str]],  # dict
        notnan_table: dict[str, frozenset[str]],  # dict
        plain: tuple[str, ...],  # object, compared by identity
        empty: frozenset[str],  # object
        checked: frozenset[str],  # object
        close: Callable[[str, str | None, str | None, str | None, int, int], None],
        now_ms: int | None,  # object; int64 compared natively
        max_future_ms: int,  # object; int64 compared natively
        fast: bool = ...,  # bint
    ) -> None: ...
    @property
    def n_rows(self) -> int: ...
    def next_row(self) -> Row | None: ...
