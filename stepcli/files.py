"""Small-file I/O in one place: reading the text files users hand us (annotations, class and pair
lists) and writing our own JSON, CSV and Markdown outputs atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from stepcli.errors import StepcliError


def read_text(path: Path | str) -> str:
    """The file as text: UTF-8, a leading BOM dropped (spreadsheet programs write one); a file that
    is not UTF-8 or cannot be read is a one-line error naming it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise StepcliError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None
    except OSError as err:
        raise StepcliError(f"{path} cannot be read ({err.strerror or err})") from None


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
