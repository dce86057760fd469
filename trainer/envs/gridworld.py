"""A deterministic grid world with walls, lava and a goal: `agentserve/GridWorld-v0`, and a bigger
maze of corridors, `agentserve/MazeGridWorld-v0` (one-hot observations, about half of all moves
bump into a wall: the environment for masked against unmasked training).

Layout characters: `S` start, `G` goal (+20, ends the episode), `L` lava (-10, ends the episode),
`#` wall (cannot be entered), `.` floor. Every move costs -1, also a move into a wall or the edge
(the agent then stays put). Actions: 0 up, 1 right, 2 down, 3 left. `info["action_mask"]` flags the
moves that do not bump into a wall or the edge (Gymnasium's convention, as in Taxi).

Observations (the `observation` argument): "index", the cell index `row * width + col`
(`Discrete(height * width)`); or "onehot", that index one-hot encoded (a float32 `Box` of
`height * width` zeros and a one). With `mask_in_observation=True` the observation is instead
PettingZoo's action-mask dict, `{"observation": <as above>, "action_mask": <int8, one per action>}`,
and `info` carries no mask.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

DEFAULT_LAYOUT = (
    "S..#....",
    ".#.#.##.",
    ".#...#..",
    ".##L.#.#",
    "...L...G",
)
MAZE_LAYOUT = (
    "S..#.....",
    "##.#.###.",
    "...#...#.",
    ".#####.#.",
    ".....#...",
    "####.###.",
    "G....#...",
)
"""The maze of `agentserve/MazeGridWorld-v0`: one winding corridor with dead ends, 18 steps from
S to G, where about half of all moves (51% averaged over the open cells) bump into a wall."""
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
STEP_REWARD = -1.0
GOAL_REWARD = 20.0
LAVA_REWARD = -10.0
OBSERVATIONS = ("index", "onehot")
"""The values of the `observation` argument."""


class GridWorldEnv(gym.Env[Any, np.int64]):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012  (Gymnasium declares it an instance field)

    def __init__(
        self,
        layout: tuple[str, ...] = DEFAULT_LAYOUT,
        render_mode: str | None = None,
        observation: str = "index",
        mask_in_observation: bool = False,
    ):
        widths = {len(row) for row in layout}
        if len(widths) != 1:
            raise ValueError("every layout row must have the same width")
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
        self.layout = tuple(layout)
        self.height, self.width = len(layout), widths.pop()
        cells = "".join(layout)
        if cells.count("S") != 1 or "G" not in cells:
            raise ValueError("a layout needs exactly one S and at least one G")
        self.start = cells.index("S")
        self.onehot = observation == "onehot"
        self.mask_in_observation = mask_in_observation
        n = self.height * self.width
        cell_space: gym.Space[Any] = (
            gym.spaces.Box(0.0, 1.0, (n,), np.float32) if self.onehot else gym.spaces.Discrete(n)
        )
        self.observation_space = (
            gym.spaces.Dict(
                {
                    "observation": cell_space,
                    "action_mask": gym.spaces.Box(0, 1, (len(MOVES),), np.int8),
                }
            )
            if mask_in_observation
            else cell_space
        )
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self.render_mode = render_mode
        self.state = self.start

    def cell(self, state: int) -> str:
        return self.layout[state // self.width][state % self.width]

    def transition(self, state: int, action: int) -> tuple[int, float, bool]:
        """The model: (next_state, reward, terminated) of taking `action` in `state`."""
        row, col = divmod(state, self.width)
        d_row, d_col = MOVES[action]
        r, c = row + d_row, col + d_col
        next_state = state
        if 0 <= r < self.height and 0 <= c < self.width and self.layout[r][c] != "#":
            next_state = r * self.width + c
        kind = self.cell(next_state)
        if kind == "G":
            return next_state, GOAL_REWARD, True
        if kind == "L":
            return next_state, LAVA_REWARD, True
        return next_state, STEP_REWARD, False

    def action_mask(self, state: int) -> npt.NDArray[np.int8]:
        """1 for each move that changes the cell."""
        return np.array(
            [self.transition(state, a)[0] != state for a in range(len(MOVES))], dtype=np.int8
        )

    def observe(self) -> tuple[Any, dict[str, Any]]:
        """(observation, info) of the current state, as `observation` and `mask_in_observation`
        ask."""
        if self.onehot:
            cell: Any = np.zeros(self.height * self.width, dtype=np.float32)
            cell[self.state] = 1.0
        else:
            cell = np.int64(self.state)
        mask = self.action_mask(self.state)
        if self.mask_in_observation:
            return {"observation": cell, "action_mask": mask}, {}
        return cell, {"action_mask": mask}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = self.start
        return self.observe()

    def step(self, action: np.int64) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}")
        self.state, reward, terminated = self.transition(self.state, int(action))
        observation, info = self.observe()
        return observation, reward, terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        rows = [list(row) for row in self.layout]
        r, c = divmod(self.state, self.width)
        rows[r][c] = "A"
        return "\n".join("".join(row) for row in rows) + "\n"


def optimal_return(env: GridWorldEnv, horizon: int, gamma: float = 1.0) -> float:
    """The best achievable return from the start within `horizon` steps (finite-horizon DP)."""
    n = env.height * env.width
    value = np.zeros(n)
    for _ in range(horizon):
        new = np.full(n, -np.inf)
        for s in range(n):
            if env.cell(s) in "#GL":
                new[s] = 0.0
                continue
            for a in range(len(MOVES)):
                s2, r, done = env.transition(s, a)
                new[s] = max(new[s], r + (0.0 if done else gamma * value[s2]))
        value = new
    return float(value[env.start])
