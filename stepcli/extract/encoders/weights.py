"""Where a backbone's weights come from, shared by every family: random init (seeded), a local
file (checked tensor by tensor, so a file for another model is one line naming the tensor), and
the network checks that fail in seconds instead of after a hub's retries."""

from __future__ import annotations

import hashlib
import logging
import socket
import sys
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import torch

from stepcli.errors import StepcliError

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"
# a random-init backbone must give the same tokens in every run, or a resumed cache would mix two models
RANDOM_INIT_SEED = 0
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_WRAPPERS = ("state_dict", "model", "module", "model_ema")


def file_identity(path: str) -> str:
    """``sha256:<hex>`` of a weights file: the cache records which file, not just its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def looks_like_path(weights: str) -> bool:
    return "/" in weights or "\\" in weights or Path(weights).suffix in WEIGHT_SUFFIXES


def existing_file(path: str) -> str:
    """The resolved path of a weights file that exists and is one of the formats `read_state_dict`
    reads; checked from its first bytes (a safetensors header, a zip or pickle), so that the meta
    build of `backbones --spec` and extract's check refuse what loading it would."""
    if not Path(path).is_file():
        raise StepcliError(f"weights file {path} not found")
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as err:
        raise StepcliError(f"weights file {path} cannot be read ({err.strerror or err})") from None
    # safetensors: an 8-byte header length, then the JSON header; torch.save: a zip, or (legacy) a pickle
    safetensors = len(head) > 8 and head[8:9] == b"{"
    if not (safetensors or head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise StepcliError(
            f"weights file {path} is neither a safetensors file nor a PyTorch checkpoint (it begins {head[:8]!r}); "
            "give the model's .safetensors, .pt or .bin file"
        )
    return str(Path(path).resolve())


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or torch file, unwrapped from a training checkpoint's dict and
    DDP's ``module.`` prefix."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file  # deferred: only loading a weights file needs it

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file is the user's to fix, in one line
        raise StepcliError(f"cannot read weights file {path}: {str(err).splitlines()[0]}") from None
    while isinstance(state, dict):
        wrapped = next((state[k] for k in _WRAPPERS if isinstance(state.get(k), dict)), None)
        if wrapped is None or any(torch.is_tensor(v) for v in state.values()):
            break
        state = wrapped
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise StepcliError(f"weights file {path} holds no tensors by name (a state dict)")
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def model_filter(model: torch.nn.Module) -> Callable | None:
    """The timm module's own checkpoint converter (original-format keys, position embeddings
    resampled to the model's size), where it has one."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def apply_filter(state: dict, model: torch.nn.Module) -> dict:
    """`state` through the model's converter; one that does not understand the file leaves it as it
    is, and the tensor check below names what does not fit."""
    convert = model_filter(model)
    if convert is None:
        return state
    try:
        return dict(convert(dict(state), model))
    except Exception:  # noqa: BLE001 - a converter for another format: report the mismatch instead
        return state


def load_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], spec: str, path: str,
                 optional: Iterable[str] = (), ignored: Iterable[str] = ()) -> None:  # fmt: skip
    """Load `state` into `module`, refusing in one line, naming the first tensor that does not fit.

    `optional`: key prefixes the file may lack (projections and heads the tokens never pass
    through); `ignored`: key prefixes dropped from the file (a classifier head).
    """
    optional, ignored = tuple(optional), tuple(ignored)
    where = f"cannot load {path} into {':'.join(spec.split(':')[:2])}"  # the model, not the file again
    state = {k: v for k, v in state.items() if not (ignored and k.startswith(ignored))}
    expected = module.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked") or (optional and key.startswith(optional)):
                continue
            raise StepcliError(f"{where}: the file lacks tensor {key!r} (not a checkpoint of this model?)")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise StepcliError(
                f"{where}: tensor {key!r} is {list(state[key].shape)} in the file, {list(tensor.shape)} in the model"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise StepcliError(f"{where}: the model has no tensor {extra[0]!r} (a checkpoint of another model?)")
    module.load_state_dict(state, strict=False)


def cached_hub_file(hf_hub: str) -> str | None:
    """A file open_clip downloaded before, so a known tag works offline once fetched."""
    if not hf_hub:
        return None
    from huggingface_hub import try_to_load_from_cache  # deferred: only a pretrained tag looks in the hub cache

    repo_id = hf_hub.rstrip("/")
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            return found
    return None


def require_network(host: str, spec: str) -> None:
    """Fail in seconds, not after the hub's retries, when the weights cannot be fetched."""
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        family, _, rest = spec.partition(":")
        model_name = rest.partition(":")[0]
        raise StepcliError(
            f"cannot download the weights of {spec!r} ({host} unreachable); download them on a machine "
            f"with network and pass the file: {family}:{model_name}:/path/to/weights.safetensors"
        ) from None


def warn_random_init(spec: str) -> None:
    log.warning(
        "WARNING: %s has no weights: using RANDOM-INIT weights (fine for tests and the demo, "
        "meaningless for research); pass a pretrained tag or a weights file",
        spec,
    )


class _RandomInitNotice(logging.Filter):
    """open_clip announces random init on the root logger; our own warning already said it, louder."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "initialized randomly" not in message and "does not have set_input_size" not in message


@contextmanager
def random_init_seed():
    """Build a model with the fixed seed, leaving the caller's random state and the root logger alone."""
    notice = _RandomInitNotice()
    root = logging.getLogger()
    root.addFilter(notice)  # only while the model is built: the root logger is left as it was
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            yield
    finally:
        root.removeFilter(notice)
