"""Network builders."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def forward_layers(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`module(x)` (the same numbers), for a Sequential faster: its layers' `forward` is called
    directly, and a ReLU or tanh right after a linear layer is applied in place, on the linear
    layer's fresh output. `Module.__call__` (hooks, which these networks never have) costs about
    1 us a layer, as much as a layer's arithmetic in these small networks, and a fresh tensor
    per activation is one more allocation and memory pass. Autograd allows the in-place
    activations: a linear layer's backward needs its input, not its output, and ReLU's and
    tanh's backward needs only their output."""
    if type(module) is not nn.Sequential:
        out: torch.Tensor = module(x)
        return out
    after_linear = False
    for layer in module:
        if after_linear and type(layer) is nn.ReLU:
            x = torch.relu_(x)
        elif after_linear and type(layer) is nn.Tanh:
            x = torch.tanh_(x)
        else:
            x = layer.forward(x)
        after_linear = type(layer) is nn.Linear
    return x


def mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """Linear layers with ReLU between them; no activation on the output."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class DuelingQNetwork(nn.Module):
    """Dueling architecture (Wang et al., 2016): a shared trunk, then a state value V(s) and
    advantages A(s, a), combined as Q = V + A - mean_a A (the mean keeps V and A identifiable)."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_actions: int) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("a dueling network needs at least one hidden layer")
        self.trunk = nn.Sequential(*list(mlp(in_features, hidden[:-1], hidden[-1])), nn.ReLU())
        self.value = nn.Linear(hidden[-1], 1)
        self.advantage = nn.Linear(hidden[-1], num_actions)

    def forward(self, observations_BO: torch.Tensor) -> torch.Tensor:
        features_BH = self.trunk(observations_BO)
        advantages_BA = self.advantage(features_BH)
        q_values_BA: torch.Tensor = (
            self.value(features_BH) + advantages_BA - advantages_BA.mean(dim=-1, keepdim=True)
        )
        return q_values_BA


def forward_in_chunks(module: nn.Module, x_BI: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """module(x) without gradients, `rows` rows at a time (the same numbers). For a large batch
    (DQN's targets of a whole training phase: 8192 rows) the intermediates of one pass are 8 MB
    each, which the allocator maps afresh on every call, and their page faults on first touch
    cost as much as the matrix products (DQN's targets on CartPole took 22 ms a phase whole,
    10.5 ms in chunks of 256 rows, whose 256 KB buffers are reused)."""
    with torch.no_grad():
        if len(x_BI) <= rows:
            return forward_layers(module, x_BI)
        return torch.cat([forward_layers(module, part) for part in torch.split(x_BI, rows)])


def q_network(
    in_features: int, hidden: Sequence[int], num_actions: int, dueling: bool
) -> nn.Module:
    return (DuelingQNetwork if dueling else mlp)(in_features, hidden, num_actions)


def orthogonal_mlp(
    in_features: int, hidden: Sequence[int], out_features: int, output_gain: float
) -> nn.Sequential:
    """Tanh MLP with orthogonal weights and zero biases, as Stable-Baselines3 and CleanRL build
    actor-critic networks: gain sqrt(2) on hidden layers, `output_gain` on the output layer."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [_orthogonal(nn.Linear(width, size), 2**0.5), nn.Tanh()]
        width = size
    layers.append(_orthogonal(nn.Linear(width, out_features), output_gain))
    return nn.Sequential(*layers)


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """Separate policy and value MLPs (no shared trunk, as SB3's default for MlpPolicy) behind an
    optional input normalizer. The policy output layer starts near zero (gain 0.01), so the
    initial policy is close to uniform over the allowed actions (or centred on 0 for Gaussian
    policies, whose learned state-independent log std starts at `log_std_init`).

    `policy(obs)` gives the distribution parameters (trainer.core.policy_heads): the logits, or
    the mean and log std side by side; `forward(obs) -> (parameters, values_B)`."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_outputs: int,
        normalizer: nn.Module | None = None,
        log_std_init: float | None = None,
    ) -> None:
        super().__init__()
        self.normalizer = normalizer if normalizer is not None else nn.Identity()
        self.actor = orthogonal_mlp(in_features, hidden, num_outputs, 0.01)
        self.critic = orthogonal_mlp(in_features, hidden, 1, 1.0)
        self.log_std: nn.Parameter | None = (
            None
            if log_std_init is None
            else nn.Parameter(torch.full((num_outputs,), float(log_std_init)))
        )

    def _parameters_of(self, actor_out: torch.Tensor) -> torch.Tensor:
        if self.log_std is None:
            return actor_out
        return torch.cat([actor_out, self.log_std.expand_as(actor_out)], dim=-1)

    def policy(self, observations_BO: torch.Tensor) -> torch.Tensor:
        return self._parameters_of(
            forward_layers(self.actor, self.normalizer.forward(observations_BO))
        )

    def value(self, observations_BO: torch.Tensor) -> torch.Tensor:
        return forward_layers(self.critic, self.normalizer.forward(observations_BO)).squeeze(-1)

    def forward(self, observations_BO: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features_BO = self.normalizer.forward(observations_BO)
        values_B = forward_layers(self.critic, features_BO).squeeze(-1)
        return self._parameters_of(forward_layers(self.actor, features_BO)), values_B

    def exported_actor(self) -> nn.Module:
        """A copy of normalizer + actor: observation -> logits, or -> mean."""
        return copy.deepcopy(nn.Sequential(self.normalizer, self.actor))
