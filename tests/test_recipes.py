"""recipes/: every study file parses against its command's own options and starts; the demo's runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import yaml
from conftest import fails

from stepcli.cli import cli
from stepcli.commands.configfile import COMMAND_KEY, config_defaults, read_config

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def test_recipes_are_there() -> None:
    names = {p.stem for p in RECIPES}
    assert {"demo", "ssv2-compare", "ssv2-ablation", "ssv2-vjepa2-20-heads", "ssv2-low-data"} <= names
    assert all(f"{ds}-{what}" in names for ds in ("ssv2", "diving48", "ikea-asm", "drive-act")
               for what in ("extract", "compare", "ablation"))  # fmt: skip


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_starts(recipe: Path, tmp_path) -> None:
    data = read_config(recipe)
    command = cli.commands[data[COMMAND_KEY]]
    defaults = config_defaults(click.Context(command, info_name=command.name), command, recipe, data)
    assert set(defaults) >= {"out"}
    if command.name == "extract":  # it starts: past the options and the backbone, to the dataset's missing root
        line = fails("extract", "--config", recipe, "--root", tmp_path / "none", "--out", tmp_path / "cache")
        assert str(tmp_path / "none") in line and "--config" not in line
    elif command.name == "compare":  # to the missing cache
        line = fails("compare", "--config", recipe, "--cache", tmp_path / "none", "--out", tmp_path / "study")
        assert str(tmp_path / "none") in line and "--config" not in line


@pytest.mark.slow
def test_demo_recipe_runs_end_to_end(demo_study) -> None:
    comparison = json.loads((demo_study / "compare" / "comparison.json").read_text())
    assert comparison["probes"] and (demo_study / "compare" / "comparison.md").is_file()
    written = yaml.safe_load((demo_study / "config.yaml").read_text())
    assert written["command"] == "demo" and written["pool"] == "4" and written["size"] == 4
