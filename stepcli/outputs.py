"""Where a command writes, checked before any work: one helper every library entry point calls on
its output folder before it reads tokens, trains or plots, so that a folder that cannot be written
is one line naming the path and the cause instead of a traceback after the work.

The check creates nothing: it writes and removes a probe file in the folder (or, when the folder
does not exist yet, in its nearest existing ancestor, where it would be created), so a refusal for
any later reason leaves no empty folder behind. A folder holding another kind of output (a cache
given as a run's `--out`, a comparison given as a cache's) is refused too: writing beside it would
leave two studies' files mixed, and the one being replaced could not be told apart afterwards.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

from stepcli.errors import StepcliError

#: each kind of output folder and the file that marks it (the one its writer writes last or alone)
KINDS: dict[str, str] = {
    "cache": "manifest.json",
    "run": "model.safetensors",
    "seeds study": "seeds.json",
    "comparison": "comparison.json",
    "shots study": "shots.json",
    "layer study": "layers.json",
    "shuffle test": "results.json",
    "evaluation": "evaluation.json",
    "pair mining": "pairs.json",
    "frames study": "frames.json",
    "report": "report.json",
}


def quoted(path: Path | str) -> str:
    """A path as a shell would need it typed (quoted when it holds spaces or shell characters)."""
    return shlex.quote(str(path))


def nearest_existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (what a `mkdir -p` of `path` would start from)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def other_kind(path: Path, kind: str) -> str | None:
    """The kind of output another study left in folder `path`, if any (none for `kind` itself)."""
    for other, marker in KINDS.items():
        if other != kind and (path / marker).is_file():
            return other
    return None


def check_out(path: Path | str, kind: str, flag: str = "--out") -> Path:
    """Refuse, in one line, an output folder `path` for `kind` (a key of `KINDS`, or a kind with no
    marker such as "demo") that is a file, lies under a file, cannot be created or written, or
    holds another kind of output. Creates nothing; returns `path`."""
    path = Path(path)
    name = f"{flag} {quoted(path)}"
    if path.exists() and not path.is_dir():
        raise StepcliError(f"{name} is a file, not a folder; choose a folder for the {kind}")
    start = nearest_existing(path)
    if not start.is_dir():
        raise StepcliError(
            f"{name}: {quoted(start)} is a file, so no folder can be made under it; choose another folder"
        )
    if path.is_dir():
        found = other_kind(path, kind)
        if found is not None:
            raise StepcliError(
                f"{name} holds a {found} ({KINDS[found]}), not a {kind}; choose a new folder, or delete that one first"
            )
    try:
        handle, probe = tempfile.mkstemp(dir=start, prefix=".stepcli-write-test-")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        where = "" if start == Path(os.path.abspath(path)) else f" (its folder {quoted(start)})"
        raise StepcliError(f"{name} cannot be written{where}: {reason}; choose a folder you can write") from None
    os.close(handle)
    os.unlink(probe)
    return path
