"""The exact verifier: completion structure and answers (vectorised), and the steps of a chain of thought (Python).

A completion is the part of an episode after the prompt. It is **well formed** when it reads exactly::

    <think> THOUGHT </think> <answer> ANSWER <eos>

with each of the four special tokens once, a non-empty ``THOUGHT`` and a non-empty ``ANSWER``; it **parses** when,
in addition, ``ANSWER`` is a number ``-? digits ( / digits )?`` with a non-zero denominator. An episode cut at the
length cap, or ended by emitting PAD, is never well formed.

Structure and answers are checked with numpy over all finished episodes at once (most random completions fail the
first test, the ``<think>`` token). Only chains of thought are read in Python, one completion at a time, and only
for completions that parse and differ from the gold completion; results are memoised.

A **step** is one ``;``-separated segment of the thought. It *counts* when it is ``expression = number`` where
(1) the expression has at least one binary operator and no ``x``, (2) both sides are equal as exact rationals,
(3) it is *grounded*: every number it uses is a number of the question, the result of an earlier counted step, a
negation of such a number, or (as ``p/q``) an earlier fractional result, and (4) it is *new*: no earlier counted
step applied the same operator to the same operand values (in either order for ``+`` and ``*``), so farming
``1+1=2`` or writing ``48+37`` after ``37+48`` earns nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from envs.math.parser import Node, ParseError, Value, digit_runs, divide, evaluate, parse_expression, parse_number
from envs.math.solver import step_key
from envs.math.tokens import ANSWER, DIGIT_0, DIGIT_9, DIVIDE, EOS, EQUALS, MINUS, SEP, THINK, THINK_END, X

__all__ = [
    "Completions",
    "Structure",
    "StepCheck",
    "check_steps",
    "process_share",
    "parse_answer",
]

_POW10 = 10 ** np.arange(19, dtype=np.int64)
#: the vectorised answer check reads at most this many answer tokens and 18 digits per part; longer go to Python
_ANSWER_WINDOW = 40
_MAX_VECTOR_DIGITS = 18


@dataclass(frozen=True)
class Structure:
    """What the vectorised verifier found in ``K`` completions."""

    well_formed: np.ndarray  # (K,) bool: the four markers in place, non-empty thought and answer
    parsed: np.ndarray  # (K,) bool: well formed and the answer is a number
    correct: np.ndarray  # (K,) bool: parsed and the answer equals the gold answer exactly
    think_end: np.ndarray  # (K,) int64 position of </think> in the buffer (valid where well_formed)
    is_gold: np.ndarray  # (K,) bool: the completion is exactly the gold completion


@dataclass
class Completions:
    """``K`` finished episodes to score: their token buffers and their problems' gold data (``L`` = max_length)."""

    tokens: np.ndarray  # (K, L) prompt, completion, PAD after
    prompt_length: np.ndarray  # (K,)
    length: np.ndarray  # (K,) tokens in the buffer (prompt + completion)
    answer_numerator: np.ndarray  # (K,) gold answer, reduced, denominator > 0
    answer_denominator: np.ndarray  # (K,)
    gold: np.ndarray  # (K, G) gold completion tokens, PAD after
    gold_length: np.ndarray  # (K,)
    gold_steps: np.ndarray  # (K,) steps in the gold chain of thought

    @property
    def capacity(self) -> np.ndarray:
        """``(K,)`` the most completion tokens each buffer can hold."""
        return self.tokens.shape[1] - self.prompt_length

    @property
    def generated(self) -> np.ndarray:
        """``(K,)`` completion tokens written."""
        return self.length - self.prompt_length

    @functools.cached_property
    def structure(self) -> Structure:
        """The vectorised verdict (computed once, on first use)."""
        return _structure(self)

    def thought(self, index: int) -> np.ndarray:
        """The thought tokens of a well-formed completion ``index`` (between ``<think>`` and ``</think>``)."""
        return self.tokens[index, self.prompt_length[index] + 1 : self.structure.think_end[index]]

    def question(self, index: int) -> np.ndarray:
        """The prompt tokens of episode ``index``."""
        return self.tokens[index, : self.prompt_length[index]]


def _structure(c: Completions) -> Structure:
    tokens = c.tokens
    count, width = tokens.shape
    well_formed = np.zeros(count, dtype=bool)
    parsed = np.zeros(count, dtype=bool)
    correct = np.zeros(count, dtype=bool)
    think_end = np.zeros(count, dtype=np.int64)
    is_gold = np.zeros(count, dtype=bool)
    rows = np.arange(count)
    start, end = c.prompt_length, c.length
    # cheap tests first: most random completions already fail here
    candidate = (end - start >= 6) & (tokens[rows, np.minimum(start, width - 1)] == THINK)
    candidate &= tokens[rows, np.maximum(end - 1, 0)] == EOS
    rows = np.flatnonzero(candidate)
    if rows.size:
        block, block_start, block_end = tokens[rows], start[rows], end[rows]
        column = np.arange(width)
        inside = (column >= block_start[:, None]) & (column < block_end[:, None])
        special = inside & (block >= THINK)  # the four special tokens are the highest ids
        marks = inside & (block == THINK_END)
        position = np.argmax(marks, axis=1)
        local = np.arange(rows.size)
        after = block[local, np.minimum(position + 1, width - 1)]
        # four specials in all, <think> first, <eos> last, and "</think><answer>" once: each marker exactly once
        good = (special.sum(axis=1) == 4) & marks[local, position] & (after == ANSWER)
        good &= (position > block_start + 1) & (block_end - 1 - (position + 2) >= 1)
        rows, position = rows[good], position[good]
        well_formed[rows] = True
        think_end[rows] = position
    if rows.size:
        answer_ok, answer_right = _answers(c, rows, think_end[rows] + 2, end[rows] - 1)
        parsed[rows] = answer_ok
        correct[rows] = answer_right
        is_gold[rows] = _matches_gold(c, rows)
    return Structure(well_formed, parsed, correct, think_end, is_gold)


def _answers(c: Completions, rows: np.ndarray, first: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(parses, equals gold) for the answer spans ``tokens[rows, first:stop]`` (all non-empty)."""
    span = stop - first
    window = int(min(span.max(), _ANSWER_WINDOW))
    j = np.arange(window)
    inside = j < span[:, None]
    token = c.tokens[rows[:, None], np.minimum(first[:, None] + j, c.tokens.shape[1] - 1)]
    digit = inside & (token >= DIGIT_0) & (token <= DIGIT_9)
    slash = inside & (token == DIVIDE)
    negative = token[:, 0] == MINUS
    allowed = digit | slash | (j == 0) & negative[:, None] | ~inside
    has_slash = slash.any(axis=1)
    slash_at = np.where(has_slash, np.argmax(slash, axis=1), span)
    numerator_digits = slash_at - negative
    denominator_digits = np.where(has_slash, span - slash_at - 1, 1)
    shape_ok = allowed.all(axis=1) & (slash.sum(axis=1) <= 1) & (numerator_digits >= 1) & (denominator_digits >= 1)
    fallback = (span > _ANSWER_WINDOW) | (numerator_digits > _MAX_VECTOR_DIGITS)
    fallback |= denominator_digits > _MAX_VECTOR_DIGITS
    shape_ok &= ~fallback
    value = np.where(digit, token - DIGIT_0, 0)
    numerator_exponent = np.clip(slash_at[:, None] - 1 - j, 0, _MAX_VECTOR_DIGITS)
    denominator_exponent = np.clip(span[:, None] - 1 - j, 0, _MAX_VECTOR_DIGITS)
    in_numerator = j < slash_at[:, None]
    with np.errstate(over="ignore"):
        numerator = np.where(in_numerator, value * _POW10[numerator_exponent], 0).sum(axis=1)
        denominator = np.where(has_slash[:, None] & ~in_numerator, value * _POW10[denominator_exponent], 0).sum(axis=1)
    denominator = np.where(has_slash, denominator, 1)
    shape_ok &= denominator > 0
    divisor = np.gcd(numerator, np.where(shape_ok, denominator, 1))
    divisor[divisor == 0] = 1
    numerator = np.where(negative, -numerator, numerator) // divisor
    denominator = denominator // divisor
    right = shape_ok & (numerator == c.answer_numerator[rows]) & (denominator == c.answer_denominator[rows])
    for k in np.flatnonzero(fallback):  # rare: very long answers are read exactly in Python
        answer = parse_answer(c.tokens[rows[k], first[k] : stop[k]])
        gold = Fraction(int(c.answer_numerator[rows[k]]), int(c.answer_denominator[rows[k]]))
        shape_ok[k] = answer is not None
        right[k] = answer is not None and answer == gold
    return shape_ok, right


def _matches_gold(c: Completions, rows: np.ndarray) -> np.ndarray:
    """Whether each completion ``rows`` equals its gold completion token for token."""
    generated = c.length[rows] - c.prompt_length[rows]
    same_length = generated == c.gold_length[rows]
    window = int(c.gold_length[rows].max())
    j = np.arange(window)
    position = np.minimum(c.prompt_length[rows][:, None] + j, c.tokens.shape[1] - 1)
    written = c.tokens[rows[:, None], position]
    gold = c.gold[rows, :window]
    return same_length & np.all((written == gold) | (j >= c.gold_length[rows][:, None]), axis=1)


def parse_answer(tokens: Sequence[int]) -> Fraction | None:
    """The exact value of an answer span, or None if it is not a number ``-? digits ( / digits )?``."""
    try:
        return Fraction(parse_number(tokens))
    except (ParseError, ValueError):
        return None


# --- steps of the chain of thought -------------------------------------------------------------------------------


class StepCheck(NamedTuple):
    """The verdict on one step of a chain of thought."""

    tokens: tuple[int, ...]
    parsed: bool  # "expression = number" with a binary operator and no x
    true: bool  # both sides equal exactly
    grounded: bool  # only numbers of the question or of earlier counted steps
    new: bool  # not a repeat of an earlier counted operation

    @property
    def counted(self) -> bool:
        """Whether the step earns process credit."""
        return self.parsed and self.true and self.grounded and self.new


def _literal_value(node: Node) -> Value | None:
    """The value of a literal-like node (``n``, ``-n``, ``n/m``, ``-n/m``), else None."""
    tag = node[0]
    if tag == "num":
        return node[1]
    if tag == "neg":
        return -node[1][1] if node[1][0] == "num" else None
    if tag == "/" and node[2][0] == "num" and node[2][1] != 0:
        numerator = _literal_value(node[1])
        if numerator is not None and node[1][0] != "/":
            return divide(numerator, node[2][1])
    return None


def _grounded(node: Node, known: set[Value]) -> bool:
    """Whether every number the expression uses is known (see the module docstring)."""
    literal = _literal_value(node)
    if literal is not None and literal in known:
        return True
    tag = node[0]
    if tag == "num":
        return False
    if tag == "neg":
        return _grounded(node[1], known)
    return _grounded(node[1], known) and _grounded(node[2], known)


def _has_operator(node: Node) -> bool:
    while node[0] == "neg":
        node = node[1]
    return node[0] != "num"


def _operation_key(node: Node) -> tuple:
    """The operator and operand values of a step's top operation (through any leading negations)."""
    while node[0] == "neg":
        node = node[1]
    return step_key(node[0], evaluate(node[1]), evaluate(node[2]))


def check_steps(question: Sequence[int], thought: Sequence[int]) -> list[StepCheck]:
    """Check every ``;``-separated step of a thought (token ids) against the numbers of the question, in order."""
    known: set[Value] = set(digit_runs(question))
    done: set[tuple] = set()
    tokens = np.asarray(thought).tolist()
    bounds = [-1, *(i for i, token in enumerate(tokens) if token == SEP), len(tokens)]
    return [_check_step(tuple(tokens[a + 1 : b]), known, done) for a, b in zip(bounds, bounds[1:], strict=False)]


def _check_step(tokens: tuple[int, ...], known: set[Value], done: set[tuple]) -> StepCheck:
    """Check one step; a counted step's operation and result join ``done`` and ``known``."""
    if tokens.count(EQUALS) != 1 or X in tokens:
        return StepCheck(tokens, False, False, False, False)
    split = tokens.index(EQUALS)
    try:
        left = parse_expression(tokens[:split])
        right = parse_number(tokens[split + 1 :])
    except ParseError:
        return StepCheck(tokens, False, False, False, False)
    if not _has_operator(left):
        return StepCheck(tokens, False, False, False, False)
    try:
        value = evaluate(left)
        key = _operation_key(left)
    except ZeroDivisionError:
        return StepCheck(tokens, True, False, False, False)
    check = StepCheck(tokens, True, value == right, _grounded(left, known), key not in done)
    if check.counted:
        done.add(key)
        known.add(right)
    return check


@functools.lru_cache(maxsize=1 << 16)
def _process_share_cached(question: bytes, thought: bytes, gold_steps: int) -> float:
    checks = check_steps(np.frombuffer(question, dtype=np.int64), np.frombuffer(thought, dtype=np.int64))
    counted = sum(check.counted for check in checks)
    return min(counted, gold_steps) / max(len(checks), gold_steps)


def process_share(question: Sequence[int], thought: Sequence[int], gold_steps: int) -> float:
    """``min(counted steps, gold steps) / max(written steps, gold steps)``: 1 for the gold chain; extra, repeated,
    wrong or ungrounded steps dilute it, and it never exceeds what the gold chain earns. Memoised."""
    if gold_steps < 1:
        raise ValueError(f"gold_steps must be a positive integer, got {gold_steps!r}")
    question_bytes = np.ascontiguousarray(question, dtype=np.int64).tobytes()
    thought_bytes = np.ascontiguousarray(thought, dtype=np.int64).tobytes()
    return _process_share_cached(question_bytes, thought_bytes, int(gold_steps))
