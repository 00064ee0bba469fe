"""failures.jsonl: one line per clip that could not be extracted, with the reason."""

from __future__ import annotations

import json
import os
from pathlib import Path


def append_failure(path: Path, clip_id: str, video: str, reason: str) -> None:
    """Append the record in one O_APPEND write, at once: a crash later in the run keeps it, and
    ranks appending to the same file at the same time cannot interleave their lines."""
    line = (json.dumps({"clip_id": clip_id, "path": video, "reason": reason}) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_failures(path: Path) -> list[dict]:
    """Latest record per clip id (a clip that failed in several runs is listed once)."""
    if not path.is_file():
        return []
    latest: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            latest[record["clip_id"]] = record
    return list(latest.values())
