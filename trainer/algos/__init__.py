"""Every bundled algorithm, one file each; importing this package registers them all."""

from trainer.algos import (
    a2c,
    dqn,
    epsilon_greedy,
    linucb,
    ppo,
    qlearning,
    reinforce,
    sac,
    sac_discrete,
    sarsa,
    thompson,
    ucb1,
)

__all__ = [
    "a2c",
    "dqn",
    "epsilon_greedy",
    "linucb",
    "ppo",
    "qlearning",
    "reinforce",
    "sac",
    "sac_discrete",
    "sarsa",
    "thompson",
    "ucb1",
]
