"""Every bundled algorithm, one file each; importing this package registers them all."""

from trainer.algos import dqn, qlearning

__all__ = ["dqn", "qlearning"]
