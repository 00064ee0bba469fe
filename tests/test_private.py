"""`stepcli/private.py` holds every private torch and stdlib name stepcli uses: each still does what it
is used for on this torch, and a torch release it was not checked against fails here by name."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from stepcli.private import (
    CHECKED_TORCH,
    fused_adamw,
    is_loader_timeout,
    loader_processes,
    on_queue_feeder_error,
    shutdown_loader,
)


def test_the_torch_release_is_the_one_checked() -> None:
    assert torch.__version__.split("+")[0] == CHECKED_TORCH, (
        f"stepcli/private.py was checked against torch {CHECKED_TORCH}, this is torch {torch.__version__}: "
        "run tests/test_private.py, check each private name there against this release, then update CHECKED_TORCH"
    )


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_fused_adamw_is_adamw_on_the_scaled_gradient(scale: float) -> None:
    torch.manual_seed(0)
    param, grad = torch.randn(7), torch.randn(7)
    ours, state = param.clone(), [torch.zeros(7), torch.zeros(7)]
    reference = param.clone().requires_grad_()
    optimizer = torch.optim.AdamW([reference], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)
    step = torch.zeros((), dtype=torch.float32)
    for _ in range(3):
        step += 1
        fused_adamw(ours, grad, *state, step, lr=0.1, betas=(0.9, 0.99), eps=1e-8, grad_scale=torch.tensor(scale))
        reference.grad = grad / scale
        optimizer.step()
    torch.testing.assert_close(ours, reference.detach())


class _Slow(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        time.sleep(3.0)
        return i


def test_a_loader_timeout_its_processes_and_their_shutdown() -> None:
    it = iter(DataLoader(_Slow(), batch_size=None, num_workers=1, timeout=0.3))
    with pytest.raises(RuntimeError) as err:
        next(it)
    assert is_loader_timeout(err.value) and not is_loader_timeout(RuntimeError("another error"))
    [process] = loader_processes(it)
    assert process.is_alive()
    shutdown_loader(it)
    process.join(5)
    assert process.exitcode is not None
    assert loader_processes(iter([])) == []


def test_the_queue_feeder_error_reaches_the_handler() -> None:
    original = multiprocessing.queues.Queue._on_queue_feeder_error
    seen: list[BaseException] = []
    try:
        on_queue_feeder_error(lambda err, _obj: seen.append(err))
        queue = multiprocessing.Queue()
        queue.put(lambda: None)  # a lambda cannot be pickled: the feeder thread fails on it
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        queue.close()
    finally:
        multiprocessing.queues.Queue._on_queue_feeder_error = original
    assert seen and "pickle" in str(seen[0]).lower()
