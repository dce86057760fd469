"""trainer.envs.gridworld: the bundled `agentserve/GridWorld-v0` and
`agentserve/MazeGridWorld-v0` environments."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agentserve.errors import ConfigError
from trainer.envs import GRIDWORLD_ID, MAZE_ID, MAZE_MAX_EPISODE_STEPS, make_env
from trainer.envs.gridworld import (
    DEFAULT_LAYOUT,
    GOAL_REWARD,
    LAVA_REWARD,
    MAZE_LAYOUT,
    MOVES,
    STEP_REWARD,
    GridWorldEnv,
    optimal_return,
)

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


@pytest.fixture
def env() -> GridWorldEnv:
    made = gym.make(GRIDWORLD_ID).unwrapped
    assert isinstance(made, GridWorldEnv)
    made.reset(seed=0)
    return made


def cells(layout: tuple[str, ...]) -> str:
    return "".join(layout)


def test_check_env_passes() -> None:
    check_env(gym.make(GRIDWORLD_ID).unwrapped, skip_render_check=False)


def test_spaces_and_reset(env: GridWorldEnv) -> None:
    assert env.observation_space == gym.spaces.Discrete(40)
    assert env.action_space == gym.spaces.Discrete(4)
    observation, info = env.reset(seed=1)
    assert observation == 0  # S is the top-left cell
    assert info["action_mask"].tolist() == [0, 1, 1, 0]  # up and left leave the grid


def test_registered_with_time_limit() -> None:
    wrapped = gym.make(GRIDWORLD_ID)
    assert wrapped.spec is not None
    assert wrapped.spec.max_episode_steps == 100


def test_action_mask_flags_exactly_the_moves_that_change_the_cell(env: GridWorldEnv) -> None:
    layout = cells(DEFAULT_LAYOUT)
    checked = 0
    for state in range(len(layout)):
        if layout[state] in "#GL":
            continue
        mask = env.action_mask(state)
        assert mask.dtype == np.int8
        for action in range(len(MOVES)):
            env.state = state
            observation, _, _, _, info = env.step(np.int64(action))
            assert bool(mask[action]) == (int(observation) != state), (state, action)
            assert info["action_mask"].tolist() == env.action_mask(int(observation)).tolist()
            checked += 1
    assert checked == 4 * sum(c not in "#GL" for c in layout)


def test_bumping_costs_a_step_and_stays(env: GridWorldEnv) -> None:
    observation, reward, terminated, truncated, info = env.step(np.int64(UP))
    assert (int(observation), reward, terminated, truncated) == (0, STEP_REWARD, False, False)
    assert info["action_mask"].tolist() == [0, 1, 1, 0]


def test_walls_are_never_entered(env: GridWorldEnv) -> None:
    env.step(np.int64(RIGHT))
    observation, reward, _, _, info = env.step(np.int64(RIGHT))
    assert int(observation) == 2
    assert info["action_mask"][RIGHT] == 0  # (0, 3) is a wall
    observation, reward, terminated, _, _ = env.step(np.int64(RIGHT))
    assert (int(observation), reward, terminated) == (2, STEP_REWARD, False)
    for state in range(40):
        if env.cell(state) == "#":
            continue
        for action in range(4):
            assert env.cell(env.transition(state, action)[0]) != "#"


def test_walking_into_lava_terminates_with_lava_reward(env: GridWorldEnv) -> None:
    path = [RIGHT, RIGHT, DOWN, DOWN, RIGHT, DOWN]  # ends on the L at row 3, column 3
    for action in path[:-1]:
        _, reward, terminated, _, _ = env.step(np.int64(action))
        assert (reward, terminated) == (STEP_REWARD, False)
    observation, reward, terminated, truncated, _ = env.step(np.int64(path[-1]))
    assert env.cell(int(observation)) == "L"
    assert int(observation) == 3 * 8 + 3
    assert (reward, terminated, truncated) == (LAVA_REWARD, True, False)


def test_reaching_the_goal_terminates_with_goal_reward(env: GridWorldEnv) -> None:
    path = [RIGHT, RIGHT, DOWN, DOWN, RIGHT, RIGHT, DOWN, DOWN, RIGHT, RIGHT, RIGHT]
    total = 0.0
    for i, action in enumerate(path):
        observation, reward, terminated, _, _ = env.step(np.int64(action))
        total += reward
        assert terminated == (i == len(path) - 1)
    assert env.cell(int(observation)) == "G"
    assert reward == GOAL_REWARD
    assert total == GOAL_REWARD + STEP_REWARD * (len(path) - 1)


def test_every_move_into_lava_or_goal_terminates(env: GridWorldEnv) -> None:
    for state in range(40):
        if env.cell(state) in "#GL":
            continue
        for action in range(4):
            next_state, reward, terminated = env.transition(state, action)
            kind = env.cell(next_state)
            expected = {"G": GOAL_REWARD, "L": LAVA_REWARD}.get(kind, STEP_REWARD)
            assert reward == expected
            assert terminated == (kind in "GL")


def test_invalid_action_is_refused(env: GridWorldEnv) -> None:
    with pytest.raises(ValueError, match="invalid action"):
        env.step(np.int64(4))


def shortest_path_steps(layout: tuple[str, ...]) -> int:
    """Breadth-first search from S to the nearest G, never entering # or L."""
    height, width = len(layout), len(layout[0])
    start = cells(layout).index("S")
    frontier = deque([(divmod(start, width), 0)])
    seen = {divmod(start, width)}
    while frontier:
        (row, col), steps = frontier.popleft()
        if layout[row][col] == "G":
            return steps
        for d_row, d_col in ((-1, 0), (0, 1), (1, 0), (0, -1)):
            r, c = row + d_row, col + d_col
            inside = 0 <= r < height and 0 <= c < width
            if inside and layout[r][c] not in "#L" and (r, c) not in seen:
                seen.add((r, c))
                frontier.append(((r, c), steps + 1))
    raise AssertionError("no path to G")


def test_optimal_return_of_the_default_layout(env: GridWorldEnv) -> None:
    steps = shortest_path_steps(DEFAULT_LAYOUT)
    assert steps == 11  # S -> right 2, down 2, right 2, down 2, right 3 -> G (counted by hand)
    expected = GOAL_REWARD + STEP_REWARD * (steps - 1)
    assert expected == 10.0
    assert optimal_return(env, horizon=100) == pytest.approx(expected)
    assert optimal_return(env, horizon=steps) == pytest.approx(expected)
    # One step short of the path, the goal is out of reach: the best is worse.
    assert optimal_return(env, horizon=steps - 1) < expected


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (("S.G",), GOAL_REWARD + STEP_REWARD),
        (("SLG", "..."), GOAL_REWARD + 3 * STEP_REWARD),
        (("S#G", ".#.", "..."), GOAL_REWARD + 5 * STEP_REWARD),
    ],
)
def test_optimal_return_of_small_layouts(layout: tuple[str, ...], expected: float) -> None:
    env = GridWorldEnv(layout)
    assert GOAL_REWARD + STEP_REWARD * (shortest_path_steps(layout) - 1) == expected
    assert optimal_return(env, horizon=50) == pytest.approx(expected)


def test_custom_layout_through_gym_make() -> None:
    env = gym.make(GRIDWORLD_ID, layout=("S.G",)).unwrapped
    assert isinstance(env, GridWorldEnv)
    assert env.observation_space == gym.spaces.Discrete(3)


@pytest.mark.parametrize(
    "layout",
    [
        ("S..", "..G."),  # ragged rows
        ("...", "..G"),  # no start
        ("S.S", "..G"),  # two starts
        ("S..", "..."),  # no goal
    ],
)
def test_bad_layout_raises_value_error(layout: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="layout"):
        GridWorldEnv(layout)


def test_render_ansi_marks_the_agent() -> None:
    env = GridWorldEnv(render_mode="ansi")
    env.reset(seed=0)
    env.step(np.int64(RIGHT))
    frame = env.render()
    assert frame is not None
    assert frame.splitlines()[0] == "SA.#...."
    assert GridWorldEnv().render() is None


# --- Observations and the maze ----------------------------------------------------------------


VARIANTS = [
    {},
    {"observation": "onehot"},
    {"mask_in_observation": True},
    {"observation": "onehot", "mask_in_observation": True},
]


@pytest.mark.parametrize("env_id", [GRIDWORLD_ID, MAZE_ID])
@pytest.mark.parametrize("kwargs", VARIANTS)
def test_check_env_passes_for_every_observation(env_id: str, kwargs: dict[str, object]) -> None:
    check_env(gym.make(env_id, **kwargs).unwrapped, skip_render_check=False)


def test_onehot_observation_marks_the_cell() -> None:
    env = GridWorldEnv(observation="onehot")
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (40,), np.float32)
    observation, info = env.reset(seed=0)
    assert observation.dtype == np.float32 and observation.tolist() == [1.0] + [0.0] * 39
    assert info["action_mask"].tolist() == [0, 1, 1, 0]
    observation, _, _, _, _ = env.step(np.int64(RIGHT))
    assert np.flatnonzero(observation).tolist() == [1] and observation.sum() == 1.0


@pytest.mark.parametrize("observation", ["index", "onehot"])
def test_mask_in_observation_is_pettingzoo_style(observation: str) -> None:
    env = GridWorldEnv(observation=observation, mask_in_observation=True)
    plain = GridWorldEnv(observation=observation)
    assert isinstance(env.observation_space, gym.spaces.Dict)
    assert env.observation_space["observation"] == plain.observation_space
    assert env.observation_space["action_mask"] == gym.spaces.Box(0, 1, (4,), np.int8)
    for action in (None, RIGHT, DOWN, DOWN):
        if action is None:
            dict_observation, info = env.reset(seed=0)
            expected, expected_info = plain.reset(seed=0)
        else:
            dict_observation, _, _, _, info = env.step(np.int64(action))
            expected, _, _, _, expected_info = plain.step(np.int64(action))
        assert info == {}  # the mask travels in the observation only
        assert np.array_equal(dict_observation["observation"], expected)
        assert dict_observation["action_mask"].tolist() == expected_info["action_mask"].tolist()


def test_unknown_observation_is_refused() -> None:
    with pytest.raises(ValueError, match="observation must be one of"):
        GridWorldEnv(observation="pixels")
    with pytest.raises(ConfigError, match="observation must be one of"):
        make_env(MAZE_ID, observation="pixels")


def test_maze_is_registered_with_onehot_observations_and_its_time_limit() -> None:
    env = gym.make(MAZE_ID)
    assert env.spec is not None and env.spec.max_episode_steps == MAZE_MAX_EPISODE_STEPS == 200
    grid = env.unwrapped
    assert isinstance(grid, GridWorldEnv) and grid.layout == MAZE_LAYOUT
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (63,), np.float32)
    assert env.action_space == gym.spaces.Discrete(4)


def test_maze_shortest_path_and_optimal_return() -> None:
    steps = shortest_path_steps(MAZE_LAYOUT)
    assert steps == 18
    expected = GOAL_REWARD + STEP_REWARD * (steps - 1)
    assert optimal_return(GridWorldEnv(MAZE_LAYOUT), horizon=200) == pytest.approx(expected)


def test_about_half_of_the_maze_moves_bump_into_a_wall() -> None:
    env = GridWorldEnv(MAZE_LAYOUT)
    open_cells = [s for s in range(63) if env.cell(s) not in "#G"]
    invalid = np.mean([1 - env.action_mask(s).mean() for s in open_cells])
    assert 0.45 < invalid < 0.55
    assert all(env.action_mask(s).any() for s in open_cells)  # every cell has a way out
