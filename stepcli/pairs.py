"""Nearly-symmetric class pairs: two classes whose frames look alike and whose order differs.

An order-blind probe can tell which pair a clip belongs to but must guess within it, so the
pair accuracy is where STEP's temporal encoding shows. Both stages use pairs (extraction records
them in the manifest, the shuffle test and compare score them), so they live here rather than in
either stage. A ``--pairs FILE`` holds one pair per line ``class a,class b`` (blank lines and
``#`` comments skipped) or a JSON list ``[["class a", "class b"], ...]``.
"""

from __future__ import annotations

import json
from pathlib import Path

from stepcli.errors import StepcliError
from stepcli.files import read_text

Pair = tuple[str, str]


def read_pairs(path: Path | str, class_names: list[str]) -> list[Pair]:
    """A ``--pairs`` file: lines ``class a,class b`` or a JSON list of two-name lists.

    Class names may contain commas (SSv2 has "Putting something, something and something on
    the table"), so a line is split at the one comma that leaves two class names.
    """
    path = Path(path)
    if not path.is_file():
        raise StepcliError(f"pairs file {path} not found")
    text = read_text(path)
    names = set(class_names)
    if text.lstrip().startswith("["):
        entries = _json_pairs(path, text)
    else:
        entries = [(f"{path}:{n}", _split_line(line, names, f"{path}:{n}")) for n, line in _lines(text)]
    pairs: list[Pair] = []
    for where, (a, b) in entries:
        for name in (a, b):
            if name not in names:
                raise StepcliError(f"{where}: class {name!r} is not in the dataset's class list")
        if a == b:
            raise StepcliError(f"{where}: a pair needs two different classes, got {a!r} twice")
        if (a, b) in pairs or (b, a) in pairs:
            raise StepcliError(f"{where}: pair {a!r}, {b!r} is listed twice")
        pairs.append((a, b))
    return pairs


def _lines(text: str):
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield n, line.strip()


def _split_line(line: str, names: set[str], where: str) -> Pair:
    parts = line.split(",")
    if len(parts) < 2:
        raise StepcliError(f"{where}: expected 'class a,class b', got {line!r}")
    candidates = [(",".join(parts[:k]).strip(), ",".join(parts[k:]).strip()) for k in range(1, len(parts))]
    known = [c for c in candidates if c[0] in names and c[1] in names]
    if len(known) == 1:
        return known[0]
    if len(known) > 1:
        raise StepcliError(f"{where}: {line!r} splits into class names in more than one way; use the JSON form")
    if len(candidates) == 1:
        return candidates[0]  # the caller names the class that is not in the list
    raise StepcliError(f"{where}: {line!r} does not split into two names from the dataset's class list")


def _json_pairs(path: Path, text: str) -> list[tuple[str, Pair]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise StepcliError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
    entries = []
    for k, item in enumerate(data):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise StepcliError(f'{path}: entry {k}: expected ["class a", "class b"], got {item!r}')
        entries.append((f"{path}: entry {k}", (item[0], item[1])))
    return entries


def partner_sets(pairs: list[Pair], class_names: list[str]) -> dict[int, set[int]]:
    """`{class index: partner class indices}`; a pair naming an unknown class is an error."""
    index = {name: i for i, name in enumerate(class_names)}
    partners: dict[int, set[int]] = {}
    for a, b in pairs:
        for name in (a, b):
            if name not in index:
                raise StepcliError(f"pair ({a!r}, {b!r}): class {name!r} is not in the class list")
        partners.setdefault(index[a], set()).add(index[b])
        partners.setdefault(index[b], set()).add(index[a])
    return partners
