"""Reading series from CSV files of the form ``timestamp,value``.

Bad rows never take the good ones down: a malformed row is skipped, a NaN
value and a repeated timestamp are kept, and each is reported with the file
and line so the user can find it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad row: where it is and what is wrong with it."""

    path: str
    line: int
    reason: str
    kept: bool

    def __str__(self) -> str:
        action = "kept" if self.kept else "skipped"
        return f"{self.path} line {self.line}: {self.reason}; row {action}"


@dataclass(slots=True)
class CsvSeries:
    """The rows of one CSV file that could be read, in file order."""

    path: str
    ts: np.ndarray  # int64 ms since the epoch
    values: np.ndarray  # float64, NaN kept
    lines: np.ndarray  # int64, the 1-based line of each row
    raw_ts: list[str]
    problems: list[Problem] = field(default_factory=list)


def _parse_ts(text: str) -> int:
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"timestamp {text!r} is not finite")
        # seconds before the year 2286, milliseconds beyond
        return int(number * 1000) if abs(number) < 1e10 else int(number)
    try:
        return int(np.datetime64(text.replace("T", " ").rstrip("Z"), "ms").astype(np.int64))
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not a date, epoch seconds or milliseconds") from None


def read_csv(path: str | Path) -> CsvSeries:
    """Read a ``timestamp,value`` CSV file (header optional).

    Parameters
    ----------
    path : str or Path
        The file.  Timestamps are ISO dates (``2014-04-01 00:00:00``, UTC) or
        epoch seconds or milliseconds.

    Returns
    -------
    CsvSeries
        Every readable row in file order; ``problems`` lists each bad row with
        its line number.  Malformed rows (wrong field count, unreadable time or
        value, a value of +-Inf) are skipped; NaN values and repeated timestamps
        are kept and reported.
    """
    path = Path(path)
    name = str(path)
    ts, values, lines, raw = [], [], [], []
    problems: list[Problem] = []
    seen: set[int] = set()
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.split(",")
            if lineno == 1 and parts[0].strip().lower() in ("timestamp", "ts", "time"):
                continue
            if len(parts) != 2:
                problems.append(Problem(name, lineno, f"expected 2 fields, found {len(parts)}: {text[:60]!r}", False))
                continue
            try:
                t = _parse_ts(parts[0])
            except ValueError as exc:
                problems.append(Problem(name, lineno, str(exc), False))
                continue
            vtext = parts[1].strip()
            try:
                v = float(vtext)
            except ValueError:
                problems.append(Problem(name, lineno, f"value {vtext!r} is not a number", False))
                continue
            if math.isinf(v):
                problems.append(Problem(name, lineno, f"value {vtext!r} is infinite", False))
                continue
            if math.isnan(v):
                problems.append(Problem(name, lineno, "value is NaN", True))
            if t in seen:
                problems.append(Problem(name, lineno, f"timestamp {parts[0].strip()!r} repeats an earlier row", True))
            seen.add(t)
            ts.append(t)
            values.append(v)
            lines.append(lineno)
            raw.append(parts[0].strip())
    if problems:
        # rows that were skipped lose data: warn; kept oddities are only noted
        level = logging.WARNING if any(not p.kept for p in problems) else logging.INFO
        logger.log(level, "%s: %d bad rows (first: %s)", name, len(problems), problems[0])
    return CsvSeries(
        name,
        np.array(ts, dtype=np.int64),
        np.array(values, dtype=np.float64),
        np.array(lines, dtype=np.int64),
        raw,
        problems,
    )


def walk_csv(paths: list[str | Path]) -> list[tuple[Path, Path]]:
    """``(file, relative name)`` for each CSV under the given files and folders."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*.csv")):
                out.append((f, f.relative_to(p)))
        else:
            out.append((p, Path(p.name)))
    return out
