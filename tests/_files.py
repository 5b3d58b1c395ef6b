"""The files sink's records, read back as a user's script would: ``events.jsonl`` line by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def records(root: Path) -> list[dict[str, Any]]:
    """Every record the files sink wrote under a run's ``root`` (``featurewatch_logs/``)."""
    path = root / "featurewatch_logs" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]
