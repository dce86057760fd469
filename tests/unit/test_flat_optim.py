"""FlatOptimizer: the same steps as PyTorch's optimizers on separate parameters, gradients that
autograd accumulates into the flat buffer, clipping as clip_grad_norm_, and a state that
round-trips through a checkpoint."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from agentserve.errors import ConfigError
from trainer.core.flat_optim import ALIGNMENT, FlatOptimizer


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def _loss(net: nn.Module, step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(16, 5, generator=generator)
    target = torch.randn(16, 3, generator=generator)
    return ((net(x) - target) ** 2).sum() * 10.0  # large enough for the clip to act


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_matches_torch_optimizer_with_clipping(kind: str) -> None:
    ours, reference = _network(), _network()
    flat = FlatOptimizer(ours.parameters(), 1e-2, kind=kind, alpha=0.95, eps=1e-5)
    torch_optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(reference.parameters(), lr=1e-2, eps=1e-5)
        if kind == "adam"
        else torch.optim.RMSprop(reference.parameters(), lr=1e-2, alpha=0.95, eps=1e-5)
    )
    for step in range(20):
        flat.zero_grad()
        _loss(ours, step).backward()  # type: ignore[no-untyped-call]
        norm = flat.clip_grad_norm(1.0)
        torch_optimizer.zero_grad()
        _loss(reference, step).backward()  # type: ignore[no-untyped-call]
        expected_norm = nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        torch.testing.assert_close(norm, expected_norm)
        flat.step()
        torch_optimizer.step()
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_parameters_are_aligned_views_and_gradients_accumulate_in_place() -> None:
    net = _network()
    flat = FlatOptimizer(net.parameters(), 1e-3)
    for parameter in net.parameters():
        assert parameter.data_ptr() % (ALIGNMENT * 4) == 0
        assert parameter.untyped_storage().data_ptr() == flat.flat.untyped_storage().data_ptr()
    _loss(net, 0).backward()  # type: ignore[no-untyped-call]
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert float(flat.grad.abs().sum()) == pytest.approx(sum(float(g.abs().sum()) for g in grads))
    flat.zero_grad()
    assert all(float(p.grad.abs().sum()) == 0.0 for p in net.parameters())


def test_state_round_trips_and_a_wrong_size_is_refused() -> None:
    net = _network()
    flat = FlatOptimizer(net.parameters(), 1e-2)
    for step in range(3):
        flat.zero_grad()
        _loss(net, step).backward()  # type: ignore[no-untyped-call]
        flat.step()
    saved, net_saved = flat.state_tensors("opt."), copy.deepcopy(net.state_dict())
    assert set(saved) == {"opt.step", "opt.exp_avg", "opt.exp_avg_sq"}

    restored_net = _network()
    restored = FlatOptimizer(restored_net.parameters(), 1e-2)
    restored_net.load_state_dict(net_saved)
    restored.load_state_tensors(saved, "opt.")
    for optimizer, module in ((flat, net), (restored, restored_net)):
        optimizer.zero_grad()
        _loss(module, 9).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    for mine, theirs in zip(net.parameters(), restored_net.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)

    other = FlatOptimizer(nn.Linear(3, 2).parameters(), 1e-2)
    with pytest.raises(ConfigError, match="elements"):
        other.load_state_tensors(saved, "opt.")


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="adam, rmsprop"):
        FlatOptimizer(_network().parameters(), 1e-3, kind="sgd")
