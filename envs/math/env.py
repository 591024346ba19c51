"""The batched core of ``rlopt/MathReasoning-v0`` and its single and vector front ends."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.core import BatchedCore, BatchedVectorEnv, SingleEnv
from envs.math.problems import GeneratedProblems, Problem, ProblemBank, ProblemSource
from envs.math.rewards import REWARD_TERMS, resolve_weights, score
from envs.math.solver import solve_question
from envs.math.tokens import EOS, PAD, VOCAB_SIZE, decode, encode
from envs.math.verifier import Completions

__all__ = [
    "MathReasoningCore",
    "MathReasoningEnv",
    "MathReasoningVectorEnv",
    "gold_completion",
    "gold_completions",
    "score_completion",
]

_MIN_LENGTH = 8


class MathReasoningCore(BatchedCore):
    """``N`` token buffers of ``max_length``: prompt, then the agent's tokens, then PAD.

    State: ``tokens`` ``(N, L)``, ``length`` ``(N,)`` (tokens written, prompt included), ``prompt_length`` ``(N,)``,
    and the gold data of each env's problem (answer, gold completion, gold step count).
    """

    # render_fps only quiets Gymnasium's checker: an ansi frame is the text so far, one token per step
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 10}
    reward_term_names = tuple(REWARD_TERMS)

    def __init__(
        self,
        num_envs: int,
        level: int | None = None,
        reward: str = "outcome",
        weights: Mapping[str, float] | None = None,
        max_length: int | None = None,
        problem_file: str | Path | None = None,
    ) -> None:
        super().__init__(num_envs)
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < _MIN_LENGTH
        ):
            raise ValueError(
                f"max_length must be an integer >= {_MIN_LENGTH} or None (the level's default), got {max_length!r}"
            )
        max_length = None if max_length is None else int(max_length)
        self.source: ProblemSource
        if problem_file is not None:
            if level is not None:
                raise ValueError(f"pass either level= or problem_file=, not both (got level={level!r})")
            self.source = ProblemBank(problem_file, max_length)
        else:
            self.source = GeneratedProblems(1 if level is None else level, max_length)
        self.level = getattr(self.source, "level", None)
        self.reward = reward
        self.weights = resolve_weights(reward, weights)
        self.max_length = length = self.source.max_length
        self.single_observation_space = spaces.Box(0, VOCAB_SIZE - 1, (length,), np.int64)
        self.single_action_space = spaces.Discrete(VOCAB_SIZE)
        count = self.num_envs
        self.tokens = np.zeros((count, length), dtype=np.int64)
        self.length = np.zeros(count, dtype=np.int64)
        self.prompt_length = np.zeros(count, dtype=np.int64)
        self.gold = np.zeros((count, length), dtype=np.int64)
        self.gold_length = np.zeros(count, dtype=np.int64)
        self.answer_numerator = np.zeros(count, dtype=np.int64)
        self.answer_denominator = np.ones(count, dtype=np.int64)
        self.gold_steps = np.ones(count, dtype=np.int64)
        self.ended = np.zeros(count, dtype=bool)
        self._all = np.arange(count)

    # --- BatchedCore -------------------------------------------------------------------------------------------

    def reset_envs(self, indices: np.ndarray) -> None:
        if not len(indices):
            return
        problems = self.source.draw(self.rng, indices)
        self.tokens[indices] = problems.prompt
        self.length[indices] = problems.prompt_length
        self.prompt_length[indices] = problems.prompt_length
        self.gold[indices] = problems.gold
        self.gold_length[indices] = problems.gold_length
        self.answer_numerator[indices] = problems.answer_numerator
        self.answer_denominator[indices] = problems.answer_denominator
        self.gold_steps[indices] = problems.gold_steps
        self.ended[indices] = False

    def observe(self) -> np.ndarray:
        return self.tokens.copy()

    def step(
        self, actions: np.ndarray, active: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        count = self.num_envs
        rows = self._all if active is None else np.flatnonzero(active)
        chosen = actions if active is None else actions[rows]
        if self.ended[rows].any():
            finished = rows[self.ended[rows]][0]
            raise gym.error.ResetNeeded(f"environment {finished} has finished its episode; call reset() first")
        position = self.length[rows]
        self.tokens[rows, position] = chosen
        position += 1
        self.length[rows] = position
        # EOS ends the episode; so does PAD, which may not appear inside a sequence (the policy finds its place
        # from the count of non-PAD tokens), and the episode is then malformed. So does a full buffer: it is a
        # terminal state, not a time limit, as nothing more can be written and the completion is scored as it
        # stands. Reporting it as truncated made PPO bootstrap V(full buffer), worth more to its critic than a wrong
        # answer's format reward, and PPO learnt to write until the buffer filled (format 1.0 -> 0.0 within 2-3M
        # steps on level 1 from an 800-step SFT model, all three seeds).
        ended = (chosen == EOS) | (chosen == PAD) | (position >= self.max_length)
        truncated = np.zeros(count, dtype=bool)
        if active is None:
            terminated = ended
        else:
            terminated = np.zeros(count, dtype=bool)
            terminated[rows] = ended
        reward = np.zeros(count, dtype=np.float64)
        terms = {name: np.zeros(count, dtype=np.float64) for name in REWARD_TERMS}
        success = np.zeros(count, dtype=bool)
        finished = rows[ended]
        if finished.size:
            self.ended[finished] = True
            completions = self.completions(finished)
            total, values = score(completions, self.weights)
            reward[finished] = total
            for name, value in values.items():
                terms[name][finished] = value
            success[finished] = completions.structure.correct
        return reward, terminated, truncated, {"is_success": success, "reward_terms": terms}

    def render(self, index: int, mode: str) -> str:
        if mode != "ansi":
            raise ValueError(f"render mode {mode!r} is not supported; accepted: ['ansi']")
        return decode(self.tokens[index, : self.length[index]])

    def reset_info(self, indices: np.ndarray) -> dict[str, Any]:
        return {"prompt_length": self.prompt_length[indices].copy()}

    # --- helpers -----------------------------------------------------------------------------------------------

    def completions(self, indices: np.ndarray) -> Completions:
        """The episodes ``indices`` (int64 array) as a batch the reward terms can score."""
        return Completions(
            self.tokens[indices],
            self.prompt_length[indices],
            self.length[indices],
            self.answer_numerator[indices],
            self.answer_denominator[indices],
            self.gold[indices],
            self.gold_length[indices],
            self.gold_steps[indices],
        )

    def gold_completion(self, index: int) -> tuple[int, np.ndarray]:
        """``(prompt length, gold completion tokens (len,))`` of environment ``index``'s current problem."""
        index = self._check_index(index)
        return int(self.prompt_length[index]), self.gold[index, : self.gold_length[index]].copy()

    def problem(self, index: int) -> Problem:
        """The current :class:`Problem` of environment ``index``."""
        index = self._check_index(index)
        question = decode(self.tokens[index, : self.prompt_length[index]])
        return Problem(question, Fraction(int(self.answer_numerator[index]), int(self.answer_denominator[index])))

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self.num_envs:
            raise IndexError(f"environment index {index!r} is out of range: accepted 0..{self.num_envs - 1}")
        return int(index)


_DOC = """Arithmetic problems solved token by token: the agent writes a chain of thought, then an exact answer.

    ## Description

    Each episode poses one problem from a seeded generator with difficulty levels 1-6 (see
    :mod:`envs.math.problems` for the level table: multi-term addition and subtraction, multiplication, mixed
    expressions with precedence and parentheses, fractions, linear equations ``a*x+b=c``), or from a JSONL file.
    The agent writes one token per step, in the format of DeepSeek-R1's template::

        37+48<think>37+48=85</think><answer>85<eos>

    where the prompt is the question and the rest is the completion. A reference solver writes the gold chain of
    thought (one operation per step, ``;`` between steps, precedence order); ``gold_completion(env, i)`` gives it
    for supervised warm starts. Answers are checked exactly (integers or fractions such as ``-3/2``); model text
    is never evaluated with ``eval``.

    ## Action Space

    ``Discrete(24)``: the id of the next token (see :mod:`envs.math.tokens`: PAD=0, digits 1-10, ``+ - * /`` 11-14,
    ``( )`` 15-16, ``=`` 17, ``;`` 18, ``x`` 19, ``<think>`` 20, ``</think>`` 21, ``<answer>`` 22, ``<eos>`` 23).

    ## Observation Space

    ``Box(0, 23, (max_length,), int64)``: the prompt tokens, then the tokens generated so far, then PAD (0). PAD
    never occurs before the end, so a policy finds the next position as the number of non-PAD tokens. The prompt
    length is in the reset ``info["prompt_length"]``.

    ## Rewards

    Sparse: 0 on every step but the last. On the last step, ``sum(weight * term)`` over the terms of
    :mod:`envs.math.rewards`: ``accuracy`` (exact answer), ``format`` (the completion is
    ``<think>...</think><answer>number<eos>`` with a non-empty thought), ``process`` (share of steps that are
    true, use only numbers of the problem or earlier steps, and are not repeats; capped by the gold step count) and
    ``length`` (``-tokens / room``). ``reward="outcome"`` (default) weighs accuracy 1.0 + format 0.1,
    ``reward="cot"`` accuracy 1.0 + format 0.1 + process 0.5. Every term needs a parsed completion except length.
    ``info["reward_terms"]`` holds each unweighted term on every step (0 until the end) and ``info["is_success"]``
    is accuracy == 1.

    ## Starting State

    A problem drawn from the env's random stream: the same seed gives the same problem, in the single env and in
    any slot of the vector env.

    ## Episode End

    Terminated when the agent emits ``<eos>`` (or PAD, which ends a malformed episode), and when the buffer is full
    (``max_length`` tokens, prompt included) without ``<eos>``; such a completion earns no accuracy, format or
    process reward. A full buffer is terminal, not truncated: the completion cannot continue and is scored as it
    stands, so a critic must not bootstrap from it. The env itself never truncates.

    ## Arguments

    ``gymnasium.make("rlopt/MathReasoning-v0", level=1, reward="outcome", weights=None, max_length=None,
    problem_file=None, render_mode=None)``

    * ``level``: difficulty 1-6 (default 1: two-term addition or subtraction of numbers 0-99).
    * ``reward``: ``"outcome"`` or ``"cot"``; ``weights``: ``{term: weight}`` overriding single preset weights.
    * ``max_length``: observation length, prompt included (default per level: 32, 48, 96, 96, 128, 160; for a
      problem file, 1.5 times its longest prompt + gold completion, rounded up to a multiple of 16, at least 32).
    * ``problem_file``: a JSONL file of ``{"question": "3*x+5=20", "answer": 5}`` records, used instead of the
      generator (``level`` must then be left out).
    * ``render_mode``: ``"ansi"`` returns the decoded text.

    ``gymnasium.make_vec("rlopt/MathReasoning-v0", num_envs=N, autoreset_mode=..., **same)`` builds the batched
    version (default autoreset NEXT_STEP).

    ## Version History

    * v0: initial version.
    """


class MathReasoningEnv(SingleEnv):
    __doc__ = _DOC
    core_class = MathReasoningCore
    # class-level too: gymnasium.make checks render_mode against the class's metadata before __init__ runs
    metadata: ClassVar[dict[str, Any]] = dict(MathReasoningCore.metadata)


class MathReasoningVectorEnv(BatchedVectorEnv):
    __doc__ = "``num_envs`` math reasoning environments stepped as one numpy batch.\n\n    " + _DOC
    core_class = MathReasoningCore
    metadata: ClassVar[dict[str, Any]] = dict(MathReasoningCore.metadata)


def _core(env: Any) -> MathReasoningCore:
    """The :class:`MathReasoningCore` under a (possibly wrapped) single or vector env."""
    seen = env
    while seen is not None:
        core = getattr(seen, "core", None)
        if isinstance(core, MathReasoningCore):
            return core
        seen = getattr(seen, "env", None)
    core = getattr(getattr(env, "unwrapped", None), "core", None)
    if isinstance(core, MathReasoningCore):
        return core
    raise TypeError(f"{env!r} is not a MathReasoning environment (no MathReasoningCore inside)")


def gold_completion(env: Any, index: int = 0) -> tuple[int, np.ndarray]:
    """``(prompt length, gold completion tokens (len,))`` for environment ``index`` of a math env (for SFT).

    Works on ``gymnasium.make`` / ``make_vec`` results, wrapped or not. Call it after ``reset``.
    """
    return _core(env).gold_completion(index)


def gold_completions(env: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every env of a math env: prompt lengths ``(N,)``, gold completions ``(N, L)`` (PAD after) and their
    lengths ``(N,)``; copies."""
    core = _core(env)
    return core.prompt_length.copy(), core.gold.copy(), core.gold_length.copy()


def score_completion(
    question: str,
    completion: str,
    reward: str = "outcome",
    weights: Mapping[str, float] | None = None,
    max_length: int | None = None,
) -> tuple[float, dict[str, float]]:
    """Score one completion text for one question text exactly as the environment would.

    The completion is cut as an episode would be: after its first ``<eos>`` or PAD, or at ``max_length`` tokens
    (prompt included; default: room for the longer of the completion and the gold completion).

    Returns:
        the weighted reward and every term's value.
    """
    prompt = encode(question)
    solution = solve_question(prompt)
    gold = solution.completion_tokens()
    written = encode(completion)
    stops = np.flatnonzero((written == EOS) | (written == PAD))
    if stops.size:
        written = written[: stops[0] + 1]
    if not written.size:
        raise ValueError("a completion needs at least one token")
    if max_length is None:
        max_length = len(prompt) + max(len(written), len(gold))
    if len(prompt) + len(gold) > max_length:
        raise ValueError(f"max_length={max_length} cannot hold the question and its gold completion")
    written = written[: max_length - len(prompt)]
    tokens = np.zeros((1, max_length), dtype=np.int64)
    tokens[0, : len(prompt)] = prompt
    tokens[0, len(prompt) : len(prompt) + len(written)] = written
    gold_row = np.zeros((1, max_length), dtype=np.int64)
    gold_row[0, : len(gold)] = gold
    completions = Completions(
        tokens,
        np.asarray([len(prompt)]),
        np.asarray([len(prompt) + len(written)]),
        np.asarray([solution.answer.numerator], dtype=np.int64),
        np.asarray([solution.answer.denominator], dtype=np.int64),
        gold_row,
        np.asarray([len(gold)]),
        np.asarray([len(solution.steps)]),
    )
    total, terms = score(completions, resolve_weights(reward, weights))
    return float(total[0]), {name: float(value[0]) for name, value in terms.items()}
