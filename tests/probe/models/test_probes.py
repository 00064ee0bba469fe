"""Every registered probe: shapes, parameter counts, frame-order invariance or sensitivity."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from stepcli.cache.records import TokenLayout
from stepcli.errors import StepcliError
from stepcli.probe.models import PROBES, build_probe

B, T, P, N, D, C = 2, 8, 1, 16, 64, 5
LAYOUT = TokenLayout(num_frames=T, num_prefix=P, num_patches=N, dim=D)
# name and options of each probe that must not see frame order
ORDER_BLIND = [
    ("linear", {}),
    ("linear", {"pool": "patch"}),
    ("self-attention", {}),
    ("attentive", {}),
    ("attentive", {"depth": 2, "proj": False}),
    ("vjepa2", {}),
    ("ep", {}),
    ("step", {"temporal_pe": False, "cls": "mean"}),
    ("logreg", {}),
    ("knn", {}),
]
STEP_ABLATIONS = list(
    itertools.product([True, False], ["global", "frame", "mean"], ["simplified", "no-ff", "standard"])
)


def make(name: str, seed: int = 0, **options) -> torch.nn.Module:
    """A probe with its own random state; fitted probes get a fitted state too (a knn with an empty
    memory bank returns zeros, which would make every comparison of its logits pass)."""
    torch.manual_seed(seed)
    probe = build_probe(name, LAYOUT, C, **options).eval()
    if name == "knn":
        probe.bank = torch.nn.functional.normalize(torch.randn(4 * C, D), dim=-1)
        probe.bank_labels = torch.arange(4 * C) % C
        probe.k, probe.temperature = torch.tensor(5), torch.tensor(0.07)
    return probe


def tokens(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(B, T, P + N, D, generator=torch.Generator().manual_seed(1)).to(dtype)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_forward_shape_and_dtype(name: str) -> None:
    probe = make(name)
    logits = probe(tokens())
    assert logits.shape == (B, C) and logits.dtype == torch.float32
    assert torch.allclose(probe(tokens(torch.float16)), probe(tokens(torch.float16).float()))


# probes with weights to count and decay; knn learns nothing (a memory bank of train features)
WITH_PARAMETERS = [name for name in sorted(PROBES) if name != "knn"]


def test_knn_has_no_parameters() -> None:
    assert make("knn").num_params() == 0 == len(list(make("knn").parameters()))


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_num_params_counts_trainable(name: str) -> None:
    probe = make(name)
    assert probe.num_params() == sum(p.numel() for p in probe.parameters() if p.requires_grad) > 0
    probe.fc.requires_grad_(False)
    assert probe.num_params() == sum(p.numel() for p in probe.parameters()) - probe.fc.weight.numel() - C


@pytest.mark.parametrize("name", sorted(PROBES))
def test_config_rebuilds_probe(name: str) -> None:
    probe = make(name)
    config = json.loads(json.dumps(probe.config()))
    rebuilt = build_probe(name, LAYOUT, C, **config)
    rebuilt.load_state_dict(probe.state_dict())
    assert PROBES[name].name == name
    assert torch.equal(rebuilt.eval()(tokens()), probe(tokens()))


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_param_groups_exempt_biases_norms_and_tokens(name: str) -> None:
    probe = make(name)
    decay, no_decay = probe.param_groups(0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    skip = {id(p) for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(probe.parameters()))
    for pname, p in probe.named_parameters():
        exempt = pname.endswith("bias") or "norm" in pname or pname in ("query", "queries", "cls_token", "temporal_pe")
        assert (id(p) in skip) == exempt, pname
    assert probe.optimizer(1e-3, 0.05).param_groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize(("name", "options"), ORDER_BLIND, ids=lambda v: str(v))
def test_order_blind_probes_ignore_frame_order(name: str, options: dict) -> None:
    probe, x = make(name, **options), tokens()
    with torch.no_grad():
        logits = probe(x)
        for order in (
            torch.randperm(T, generator=torch.Generator().manual_seed(2)),
            torch.arange(T - 1, -1, -1),
        ):
            torch.testing.assert_close(probe(x[:, order]), logits, atol=1e-5, rtol=0)
        assert logits.std(dim=1).min() > 1e-3, "a probe whose logits are constant passes any order test"


def test_step_sees_frame_order() -> None:
    probe, x = make("step"), tokens()
    with torch.no_grad():
        assert (probe(x.flip(1)) - probe(x)).abs().max() > 1e-4


@pytest.mark.parametrize(("temporal_pe", "cls", "block"), STEP_ABLATIONS)
def test_step_ablations_build_and_run(temporal_pe: bool, cls: str, block: str) -> None:
    probe = make("step", temporal_pe=temporal_pe, cls=cls, block=block)
    assert probe(tokens()).shape == (B, C)
    assert probe.config()["block"] == block


@pytest.mark.parametrize("block", ["simplified", "no-ff", "standard"])
@pytest.mark.parametrize("depth", [1, 2])
def test_step_cls_row_shortcut_matches_full_block(block: str, depth: int) -> None:
    """The last block computes only the CLS row; values and gradients must equal the full block's."""
    probe, x = make("step", block=block, depth=depth).train(), tokens()
    for p in probe.parameters():  # away from init, so every weight and bias matters
        p.data.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    features = probe.forward_features(x)
    patches = x[:, :, P:] + probe.temporal_pe[None, :, None, :]
    sequence = torch.cat([probe.cls_token.expand(B, -1, -1), patches.flatten(1, 2)], dim=1)
    full = probe.blocks(sequence)[:, 0]
    torch.testing.assert_close(features, full, atol=1e-5, rtol=1e-5)
    grads = [torch.autograd.grad(out.square().sum(), list(probe.blocks.parameters())) for out in (features, full)]
    for fast, reference in zip(*grads, strict=True):
        torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-4)


def test_step_param_budget_at_vit_b() -> None:
    """The paper's claim: STEP needs about a third of the parameters of the order-blind attention probes."""
    layout = TokenLayout(num_frames=8, num_prefix=1, num_patches=49, dim=768)
    counts = {name: build_probe(name, layout, 12).num_params() for name in PROBES}
    assert counts["step"] <= 0.4 * counts["attentive"]
    assert counts["step"] <= 0.4 * counts["self-attention"]
    # without the temporal encoding and the CLS token, STEP is the attention weights and the head
    ablated = build_probe("step", layout, 12, temporal_pe=False, cls="mean").num_params()
    assert counts["step"] - ablated == 8 * 768 + 768


def test_field_baselines_param_counts_at_vit_b() -> None:
    """V-JEPA 2's attentive probe and EP at D=768, 12 classes, against counts derived by hand.

    A pre-norm block: two LayerNorms (2 x 2D), qkv (3D^2 + 3D), proj (D^2 + D), MLP D->4D->D
    (4D^2 + 4D + 4D^2 + D) = 12D^2 + 13D. V-JEPA 2's cross-attention block: the query (D), two
    LayerNorms (4D), q (D^2 + D), kv (2D^2 + 2D), no proj, the MLP (8D^2 + 5D) = 11D^2 + 13D. With 3
    blocks before it and a plain Linear head (DC + C): 47D^2 + 52D + DC + C.
    EP with Q queries: the queries (QD), one value matrix without bias (D^2), a BatchNorm without
    affine parameters (0) and the Linear head: D^2 + QD + DC + C.
    """
    d, c, q = 768, 12, 32
    layout = TokenLayout(num_frames=8, num_prefix=1, num_patches=49, dim=d)
    vjepa2 = build_probe("vjepa2", layout, c)
    assert vjepa2.config()["num_heads"] == 16 and len(vjepa2.blocks) == 3
    assert vjepa2.num_params() == 47 * d * d + 52 * d + d * c + c
    assert build_probe("ep", layout, c).num_params() == d * d + q * d + d * c + c
    block = 12 * d * d + 13 * d
    assert build_probe("ep", layout, c).num_params() - (d * c + c) < block / 11  # about a twelfth of a block
    # the order-aware controls add exactly one encoding per frame, T x D
    for name in ("attentive", "self-attention"):
        plain, control = (build_probe(name, layout, c, temporal_pe=pe).num_params() for pe in (False, True))
        assert control - plain == 8 * d


def test_vjepa2_heads_fall_back_to_a_divisor_of_d() -> None:
    layout = TokenLayout(num_frames=T, num_prefix=P, num_patches=N, dim=120)  # 16 does not divide 120
    assert build_probe("vjepa2", layout, C).config()["num_heads"] == 15


def test_unknown_probe_and_option_are_one_line_errors() -> None:
    with pytest.raises(StepcliError, match="linear, self-attention, attentive, vjepa2, step, ep, logreg, knn") as err:
        build_probe("lstm", LAYOUT, C)
    assert "\n" not in str(err.value)
    with pytest.raises(StepcliError, match="temporal_pe"):
        build_probe("step", LAYOUT, C, temporal_encoding=False)
    bad = [("step", {"cls": "both"}), ("step", {"block": "mlp"}), ("linear", {"pool": "max"}), ("step", {"depth": 0}),
           ("attentive", {"num_heads": 5}), ("self-attention", {"depth": 0}), ("ep", {"num_queries": 5}),
           ("attentive", {"temporal_pe": "yes"}), ("vjepa2", {"depth": 0})]  # fmt: skip
    for name, options in bad:
        with pytest.raises(StepcliError, match=next(iter(options))):
            build_probe(name, LAYOUT, C, **options)


def test_user_errors_are_value_errors() -> None:
    """Library callers catch bad arguments as they catch Python's own."""
    with pytest.raises(ValueError, match="unknown probe"):
        build_probe("lstm", LAYOUT, C)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_wrong_token_layout_is_an_error(name: str) -> None:
    with pytest.raises(ValueError, match=r"\[B, 8, 17, 64\]"):
        make(name)(torch.randn(B, T + 1, P + N, D))


@pytest.mark.parametrize(
    ("field", "value"), [("num_frames", 0), ("num_prefix", -1), ("num_patches", -1), ("dim", 1.5), ("dim", True)]
)
def test_token_layout_refuses_impossible_sizes(field: str, value) -> None:
    sizes = {"num_frames": T, "num_prefix": P, "num_patches": N, "dim": D, field: value}
    with pytest.raises(StepcliError, match=field):
        TokenLayout(**sizes)


def test_logreg_needs_a_cls_token() -> None:
    with pytest.raises(StepcliError, match="CLS"):
        build_probe("logreg", TokenLayout(num_frames=T, num_prefix=0, num_patches=N, dim=D), C)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_declared_order_awareness_is_what_the_probe_does(name: str) -> None:
    """`capabilities.order_aware` is what the shuffle test and the tables rely on: check it against
    the logits of reversed frames, with the probe's default options."""
    probe, x = make(name), tokens()
    with torch.no_grad():
        changed = (probe(x.flip(1)) - probe(x)).abs().max().item() > 1e-4
    assert changed == PROBES[name].capabilities.order_aware == probe.order_aware


# options that change whether a probe sees frame order, with what the built probe must declare
ORDER_OPTIONS = [
    ("attentive", {"temporal_pe": True}, True),
    ("self-attention", {"temporal_pe": True}, True),
    ("vjepa2", {"temporal_pe": True}, True),
    ("step", {"temporal_pe": False}, False),
    ("step", {"temporal_pe": False, "cls": "frame"}, False),
    ("step", {"cls": "mean", "block": "standard"}, True),
]


@pytest.mark.parametrize(("name", "options", "aware"), ORDER_OPTIONS, ids=lambda v: str(v))
def test_order_awareness_that_options_change_is_what_the_probe_does(name: str, options: dict, aware: bool) -> None:
    """A temporal encoding makes an attention probe order-aware; `Probe.order_aware` says so per instance."""
    probe, x = make(name, **options), tokens()
    with torch.no_grad():
        changed = (probe(x.flip(1)) - probe(x)).abs().max().item() > 1e-4
    assert changed == aware == probe.order_aware


@pytest.mark.parametrize("name", sorted(PROBES))
def test_a_prefix_only_cache_is_refused_exactly_by_the_probes_that_need_patches(name: str) -> None:
    prefix_only = TokenLayout(num_frames=T, num_prefix=P, num_patches=0, dim=D)
    if PROBES[name].capabilities.needs_patches:
        with pytest.raises(StepcliError, match="--tokens prefix"):
            build_probe(name, prefix_only, C)
        return
    probe = build_probe(name, prefix_only, C).eval()
    assert probe(torch.randn(B, T, P, D)).shape == (B, C)


def test_knn_reads_only_the_frame_cls_so_it_runs_on_a_prefix_only_layout() -> None:
    assert not PROBES["knn"].capabilities.needs_patches and PROBES["knn"].capabilities.needs_cls
    no_cls = TokenLayout(num_frames=T, num_prefix=0, num_patches=N, dim=D)
    with pytest.raises(StepcliError, match="CLS"):
        build_probe("knn", no_cls, C)


def test_no_module_outside_models_branches_on_a_probe_name() -> None:
    """Capabilities, not names: no comparison with a probe's name anywhere but in `probe/models/`."""
    import ast
    from pathlib import Path

    import stepcli

    root = Path(stepcli.__file__).parent
    models = root / "probe" / "models"
    for path in root.rglob("*.py"):
        if models in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                named = [c for c in constants if isinstance(c, str) and c in PROBES]
                assert not named, f"{path.relative_to(root)}:{node.lineno} compares with probe name {named[0]!r}"


def test_step_frame_attention_is_the_cls_rows_softmax() -> None:
    """The CLS token's attention per frame, against softmax(q . k) of the full projections."""
    probe, x = make("step"), tokens()
    attn = probe.blocks[-1].attn
    with torch.no_grad():
        mass = probe.frame_attention(x)
        cls = probe.blocks[-1].norm1(probe.cls_token.expand(B, 1, D))
        seq = probe.blocks[-1].norm1(x[:, :, P:] + probe.temporal_pe[None, :, None, :]).flatten(1, 2)
        keys = attn.kv(torch.cat([cls, seq], dim=1))[..., :D].view(B, -1, attn.num_heads, D // attn.num_heads)
        q = attn.q(cls).view(B, 1, attn.num_heads, D // attn.num_heads)
        weights = torch.einsum("bqhe,bshe->bhs", q, keys).mul((D // attn.num_heads) ** -0.5).softmax(-1).mean(1)
    torch.testing.assert_close(mass, weights[:, 1:].view(B, T, N).sum(-1), atol=1e-5, rtol=1e-5)
    assert (mass.sum(-1) < 1).all() and make("step", cls="mean").frame_attention(x) is None
    assert make("attentive").frame_attention(x) is None
