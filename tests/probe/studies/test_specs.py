"""Probe specs: a probe with options as its own comparison row, and `compare --ablation`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import fails, ok
from test_compare import assert_order_blind

from stepcli.errors import StepcliError
from stepcli.probe.models.specs import ablation_specs, parse_spec, split_specs
from stepcli.probe.runs.rundir import load_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_specs_parse_to_labels_and_safe_directories() -> None:
    assert split_specs("step, step[temporal_pe=false,cls=frame],attentive") == [
        "step", "step[temporal_pe=false,cls=frame]", "attentive"
    ]  # fmt: skip
    spec = parse_spec("step[temporal_pe=False, cls=frame]")
    assert spec.name == "step" and spec.option_dict == {"temporal_pe": False, "cls": "frame"}
    assert spec.label == "step[temporal_pe=false,cls=frame]" and spec.dirname == "step.temporal_pe-false.cls-frame"
    assert parse_spec("self-attention").dirname == "self-attention" == parse_spec("self-attention").label
    for bad, why in [("step[", "unbalanced"), ("step[x=1]", "no option x"), ("lstm", "unknown probe"),
                     ("step[cls]", "KEY=VALUE"), ("step[cls=frame,cls=mean]", "twice")]:  # fmt: skip
        with pytest.raises(StepcliError, match=why):
            parse_spec(bad) if "[" not in bad or bad.endswith("]") else split_specs(bad)


def test_step_ablation_is_each_switch_off_and_plain_self_attention() -> None:
    assert ablation_specs("step") == (
        "step", "step[temporal_pe=false]", "step[cls=frame]", "step[block=standard]", "self-attention"
    )  # fmt: skip
    with pytest.raises(StepcliError, match="declares no ablation"):
        ablation_specs("linear")


def test_compare_rows_of_specs_and_the_order_aware_control(demo_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "compare"
    probes = "attentive[temporal_pe=true],step[temporal_pe=false],ep,vjepa2[depth=2]"
    base = ["compare", "--cache", str(demo_cache), "--out", str(out)]
    ok(*base, "--probes", probes, "--epochs", "2", "--permutations", "3", "--quiet")
    data = json.loads((out / "comparison.json").read_text())
    rows = {r["probe"]: r for r in data["rows"]}
    assert list(rows) == split_specs(probes) == data["probes"]
    for label, dirname in [("attentive[temporal_pe=true]", "attentive.temporal_pe-true"),
                           ("step[temporal_pe=false]", "step.temporal_pe-false"), ("vjepa2[depth=2]", "vjepa2.depth-2")]:  # fmt: skip
        config = json.loads((out / "runs" / dirname / "config.json").read_text())
        assert rows[label]["run"] == f"runs/{dirname}"  # relative to the study: a moved study still reads
        assert json.loads((out / "runs" / dirname / "shuffle" / "results.json").read_text())["probe"] == label
        assert config["train"]["probe_options"] == parse_spec(label).option_dict
    for label in ("step[temporal_pe=false]", "ep", "vjepa2[depth=2]"):
        assert_order_blind(rows[label])
    # two epochs on 12 tiny clips may flip no prediction; that the control sees order at all is in its logits
    control = load_run(out / "runs" / "attentive.temporal_pe-true").probe
    tokens = torch.randn(2, *control.layout.clip_shape, generator=torch.Generator().manual_seed(0))
    assert control.order_aware and (control(tokens.flip(1)) - control(tokens)).abs().max() > 1e-5
    assert "temporal_pe='maybe'" in fails(*base, "--probes", "step[temporal_pe=maybe]")
    assert "not both" in fails(*base, "--probes", "step", "--ablation", "step")
    assert "twice" in fails(*base, "--probes", "step[cls=frame],step[cls=frame]")
