"""The package's imports run one way (docs/architecture.md): each layer imports only the layers below
it, no file imports another's private name, no folder is in a circle, and a function-level import
says why it is deferred. The imports are read from the source with `ast`, so a violation fails here
before anything is run."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import stepcli

ROOT = Path(stepcli.__file__).parent

#: top to bottom; a module belongs to the longest prefix that names it. One layer may import its own
#: layer (without a circle) and any layer below it, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("stepcli.__main__",),
    ("stepcli.cli",),
    ("stepcli.commands",),
    ("stepcli.experiment", "stepcli.api"),
    ("stepcli.probe.studies",),
    ("stepcli.probe.training",),
    ("stepcli.probe.evaluation",),
    ("stepcli.probe.runs",),
    ("stepcli.probe.models",),
    ("stepcli.probe.config", "stepcli.probe.data"),
    ("stepcli.extract",),
    ("stepcli.cache",),
    (
        "stepcli.workers",
        "stepcli.shm",
        "stepcli.distributed",
        "stepcli.progress",
        "stepcli.files",
        "stepcli.outputs",
        "stepcli.device",
        "stepcli.pairs",
        "stepcli.units",
        "stepcli.private",
    ),
    ("stepcli.errors", "stepcli.log", "stepcli.version"),
)
#: the package's face re-exports the public API; nothing inside the package imports it
FACES = {"stepcli", "stepcli.probe", "stepcli.probe.training", "stepcli.probe.evaluation"}
#: a function-level import must carry a comment with this word on its line or the line above
DEFERRED = "deferred"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (for `from a import b`: `a.b` when that is a module, else `a`)
    names: tuple[str, ...]
    line: int
    nested: bool  # inside a function (or class body), not at the top of the file
    path: Path

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT.parent)}:{self.line}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p): p for p in sorted(root.rglob("*.py"))}


def _resolve(source: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def read_imports(path: Path, known: set[str]) -> list[Import]:
    source = module_name(path)
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    # `if TYPE_CHECKING:` blocks and try/except at the top still count as the top of the file
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _resolve(source, path, node)
            if not base.startswith("stepcli"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in known else base
                names = () if sub in known else (alias.name,)
                found.append(Import(source, target, names, node.lineno, id(node) not in top, path))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("stepcli"):
                    found.append(Import(source, alias.name, (), node.lineno, id(node) not in top, path))
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    found = modules(root)
    return [i for p in found.values() for i in read_imports(p, set(found))]


def layer_of(module: str) -> int:
    best, index = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    return index


def upward(imports: list[Import]) -> list[str]:
    bad = []
    for i in imports:
        if i.target in FACES and i.source not in FACES:
            bad.append(f"{i.where()}: imports the package face {i.target} (import the module that defines it)")
        elif i.source not in FACES and layer_of(i.target) < layer_of(i.source):
            bad.append(f"{i.where()}: {i.source} imports {i.target}, a layer above it")
    return bad


def unplaced(names: list[str]) -> list[str]:
    return [m for m in names if m not in FACES and layer_of(m) < 0]


def collapse(module: str, folder: str) -> str | None:
    """The room `module` is inside `folder`'s picture: its first part below the folder (the folder's own
    `__init__` is a room too, so an entry that imports its package's face closes a circle), or None outside it."""
    if module == folder:
        return folder + ".__init__"
    if not module.startswith(folder + "."):
        return None
    return folder + "." + module[len(folder) + 1 :].split(".")[0]


def circles(imports: list[Import], packages: list[str]) -> list[str]:
    """A cycle among the rooms of each folder, every subfolder drawn as one room (as `farm-studio look` does)."""
    found = []
    for folder in packages:
        edges: dict[str, set[str]] = {}
        for i in imports:
            a, b = collapse(i.source, folder), collapse(i.target, folder)
            if a and b and a != b:
                edges.setdefault(a, set()).add(b)
        cycle = _find_cycle(edges)
        if cycle:
            found.append(f"{folder}: " + " -> ".join(cycle))
    return found


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def private_names(imports: list[Import]) -> list[str]:
    return [
        f"{i.where()}: imports the private name {n} from {i.target}"
        for i in imports
        for n in i.names
        if n.startswith("_") and not n.startswith("__")
    ]


def undeferred(imports: list[Import], root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        top = {id(n) for n in tree.body}
        for node in tree.body:
            if isinstance(node, (ast.If, ast.Try)):
                top |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                here = " ".join(lines[max(0, node.lineno - 4) : node.end_lineno])
                if DEFERRED not in here:
                    where = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
                    bad.append(f"{where}: a function-level import without a '# {DEFERRED}: why' comment")
    return bad


#: the one module allowed to use private names of torch and the standard library (tests/test_private.py)
PRIVATE_ADAPTER = "stepcli.private"


def foreign_private_names(root: Path = ROOT) -> list[str]:
    """Private names of other packages: `from torch.utils.data._utils import x`, `from m import _x`, or
    `module._x` on an imported module, anywhere but the adapter."""
    bad = []
    for name, path in modules(root).items():
        if name == PRIVATE_ADAPTER:
            continue
        tree = ast.parse(path.read_text())
        aliases: set[str] = set()
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                aliases |= {(a.asname or a.name).split(".")[0] for a in node.names if not a.name.startswith("stepcli")}
                bad += [f"{where}: imports {a.name}" for a in node.names if _private_path(a.name)]
            elif isinstance(node, ast.ImportFrom) and not node.level and not (node.module or "").startswith("stepcli"):
                names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if _private_path(node.module or "") or names:
                    bad.append(f"{where}: imports a private name from {node.module}")
                aliases |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                root_name = node.value
                while isinstance(root_name, ast.Attribute):
                    root_name = root_name.value
                if isinstance(root_name, ast.Name) and root_name.id in aliases:
                    bad.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: uses {root_name.id}....{node.attr}")
    return bad


def _private_path(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split("."))


def packages(root: Path = ROOT) -> list[str]:
    return sorted(module_name(p) for p in root.rglob("__init__.py"))


def test_every_module_has_a_layer() -> None:
    assert unplaced(list(modules())) == []


def test_no_import_runs_up() -> None:
    assert upward(all_imports()) == []


def test_no_folder_is_in_a_circle() -> None:
    assert circles(all_imports(), packages()) == []


def test_no_private_name_crosses_files() -> None:
    assert private_names(all_imports()) == []


def test_no_private_name_of_torch_or_the_standard_library() -> None:
    assert foreign_private_names() == []


def test_function_level_imports_say_why() -> None:
    assert undeferred(all_imports()) == []


# The checks themselves, on a package written for the test: each must see what it is there to see.


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    pkg = tmp_path / "stepcli"
    for folder in ("", "cache", "probe", "probe/models", "probe/studies"):
        (pkg / folder).mkdir(parents=True, exist_ok=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("class StepcliError(ValueError): ...\n")
    (pkg / "cache" / "reader.py").write_text("from stepcli.errors import StepcliError\n")
    (pkg / "probe" / "models" / "base.py").write_text("from stepcli.cache.reader import StepcliError\n_HIDDEN = 1\n")
    (pkg / "probe" / "studies" / "shuffle.py").write_text("from stepcli.probe.models.base import StepcliError\n")
    return pkg


def test_an_upward_import_is_found(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", fake)
    assert upward(all_imports(fake)) == []
    (fake / "cache" / "writer.py").write_text("from stepcli.probe.studies import shuffle\n")
    [bad] = upward(all_imports(fake))
    assert "stepcli/cache/writer.py:1" in bad and "a layer above it" in bad


def test_a_circle_private_name_and_bare_nested_import_are_found(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", fake)
    (fake / "probe" / "models" / "step.py").write_text(
        "from stepcli.probe.models.base import _HIDDEN\n\ndef f():\n    from stepcli.probe.models import base\n"
    )
    (fake / "probe" / "models" / "base.py").write_text("from stepcli.probe.models import step\n_HIDDEN = 1\n")
    imports = all_imports(fake)
    assert any("stepcli.probe.models.base -> stepcli.probe.models.step" in c for c in circles(imports, packages(fake)))
    assert private_names(imports) == [
        "stepcli/probe/models/step.py:1: imports the private name _HIDDEN from stepcli.probe.models.base"
    ]
    assert [b.split(":")[:2] for b in undeferred(imports, fake)] == [["stepcli/probe/models/step.py", "4"]]


def test_a_private_torch_name_is_found(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", fake)
    assert foreign_private_names(fake) == []
    (fake / "cache" / "writer.py").write_text(
        "import torch\nfrom torch.utils.data._utils.collate import default_convert\n\ntorch._fused_adamw_()\n"
    )
    assert [b.split(": ")[0] for b in foreign_private_names(fake)] == [
        "stepcli/cache/writer.py:2",
        "stepcli/cache/writer.py:4",
    ]
