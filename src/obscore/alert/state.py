"""Keep the alert state in a directory of JSON files, so a restart sends nothing twice.

One file per part: ``router.json`` (alerts, silences, groups with their next
flush, the notification log), ``delivery.json`` (which notifications were
delivered), and any extra part a caller saves (acks, escalations).  Each
file is written to a temporary name, flushed to disk and renamed over the old
one, so a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class StateDir:
    """A directory holding one JSON document per named part.

    Parameters
    ----------
    path : str or Path
        Created when missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def save(self, part: str, data: Any) -> None:
        """Write ``data`` as ``<part>.json`` atomically."""
        target = self.path / f"{part}.json"
        tmp = target.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"), sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        logger.debug("alert state saved: part=%s", part)

    def load(self, part: str, default: Any = None) -> Any:
        """Read ``<part>.json``, or ``default`` when it does not exist."""
        target = self.path / f"{part}.json"
        if not target.exists():
            return default
        with open(target, encoding="utf-8") as f:
            return json.load(f)
