"""Reading the small text files users hand us (annotations, class and pair lists) in one way."""

from __future__ import annotations

from pathlib import Path

from stepcli import StepcliError


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
