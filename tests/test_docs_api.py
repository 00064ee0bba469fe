"""docs/api.md: every Python block of the page runs, in order, in one namespace, as a notebook would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "api.md"


def blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_api_page_runs(tmp_path, monkeypatch, capsys) -> None:
    code = blocks(PAGE.read_text())
    assert len(code) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(code):
        exec(compile(block, f"{PAGE.name} block {i + 1}", "exec"), namespace)
    assert "| probe" in capsys.readouterr().out  # the comparison's table was printed
    assert (tmp_path / "nb" / "compare" / "report.html").is_file()


def test_api_face_names_the_commands() -> None:
    import stepcli

    for name in ("extract", "train_probe", "compare", "shuffle_test", "evaluate", "predict", "FeatureCache",
                 "load_run", "PROBES", "FAMILIES", "DATASETS"):  # fmt: skip
        assert getattr(stepcli, name) is not None and name in stepcli.__all__
    with pytest.raises(TypeError, match="epochz"):
        stepcli.train_probe("c", "linear", "o", epochz=3)


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda s, c: s.train_probe(c, "linear", "o", epochs="x"), ["epochs='x'", "an integer"]),
        (lambda s, c: s.train_probe(c, "linear", "o", lr=True), ["lr=True", "a number"]),
        (lambda s, c: s.extract("demo", "o", num_frames="a"), ["num_frames='a'", "an integer"]),
    ],
)
def test_an_api_call_with_a_wrong_type_is_one_stepcli_error(tmp_path, monkeypatch, call, names) -> None:
    import stepcli
    from stepcli.errors import StepcliError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(StepcliError) as err:
        call(stepcli, tmp_path / "no-cache")
    assert all(name in str(err.value) for name in names) and "\n" not in str(err.value), err.value
    assert not (tmp_path / "o").exists()


def test_compare_takes_one_probe_spec_as_a_string(demo_cache, tmp_path) -> None:
    import stepcli

    comparison = stepcli.compare(demo_cache, tmp_path / "study", "linear", epochs=1, permutations=1)
    assert [row.probe for row in comparison.rows] == ["linear"]
