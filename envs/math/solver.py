"""The reference solver: the gold chain of thought of a question, one binary operation per step.

Arithmetic questions are evaluated in precedence order: a post-order walk of the parsed tree, left operand first, so
``37+48*2`` gives ``48*2=96;37+96=133``. Equations with ``x`` written exactly once are solved by evaluating the
x-free side, then undoing the operations around ``x`` from the outside in: ``3*x+5=20`` gives ``20-5=15;15/3=5``.

Operands are written as values: a negative or fractional right operand is wrapped in parentheses
(``10-(-25)=35``, ``1/(15/2)=2/15``) so that every step reads left to right with the usual precedence. A step that
repeats an earlier one (same operator, same operands, in either order for ``+`` and ``*``) is not written again:
its earlier result is reused, so the gold chain never contains a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from envs.math.parser import Node, ParseError, Value, divide, parse_question, value_tokens
from envs.math.tokens import ANSWER, DIVIDE, EOS, EQUALS, MINUS, PLUS, SEP, THINK, THINK_END, TIMES, decode, encode

if TYPE_CHECKING:
    from envs.math.problems import Problem

__all__ = [
    "QuestionError",
    "Step",
    "Solution",
    "Ref",
    "PlanStep",
    "plan_question",
    "solve_question",
    "solve",
    "gold_completion_tokens",
    "step_key",
]

#: ``("leaf", i)``: the i-th number of the question (in reading order); ``("step", j)``: the result of step j
Ref = tuple[str, int]
#: one planned operation: ``(op, left, right)`` with ``op`` one of ``"+" "-" "*" "/"``
PlanStep = tuple[str, Ref, Ref]

_OP_TOKEN = {"+": PLUS, "-": MINUS, "*": TIMES, "/": DIVIDE}


class QuestionError(ValueError):
    """A question that the reference solver cannot solve (not parseable, no operation, no unique solution...)."""


@dataclass(frozen=True)
class Step:
    """One gold step ``left op right = result``."""

    op: str
    left: Value
    right: Value
    result: Value

    def tokens(self) -> list[int]:
        """Token ids of the step, e.g. ``37+48=85`` or ``10-(-25)=35``."""
        right = Fraction(self.right)
        return [
            *value_tokens(self.left),
            _OP_TOKEN[self.op],
            *value_tokens(self.right, parenthesize=right < 0 or right.denominator != 1),
            EQUALS,
            *value_tokens(self.result),
        ]


@dataclass(frozen=True)
class Solution:
    """The gold solution of a question: its numbers, the steps and the answer."""

    leaves: tuple[Value, ...]
    steps: tuple[Step, ...]
    answer: Fraction

    def completion_tokens(self) -> np.ndarray:
        """``<think> step ; step ... </think> <answer> answer <eos>`` as token ids, shape ``(len,)`` int64."""
        tokens = [THINK]
        for index, step in enumerate(self.steps):
            if index:
                tokens.append(SEP)
            tokens.extend(step.tokens())
        tokens.extend([THINK_END, ANSWER, *value_tokens(self.answer), EOS])
        return np.asarray(tokens, dtype=np.int64)

    def completion_text(self) -> str:
        """The gold completion as text."""
        return decode(self.completion_tokens())


def step_key(op: str, left: Value, right: Value) -> tuple:
    """What makes two operations the same: the operator and operands, unordered for ``+`` and ``*``."""
    if op in "+*" and right < left:
        left, right = right, left
    # ints and Fractions of equal value compare and hash alike, so no conversion is needed
    return (op, left, right)


# --- planning: which operation, in which order -----------------------------------------------------------------


def _leafify(node: Node, leaves: list[Value]) -> Node:
    """Replace number literals (and negated literals) by ``("leaf", i)`` in reading order."""
    tag = node[0]
    if tag == "num":
        leaves.append(node[1])
        return ("leaf", len(leaves) - 1)
    if tag == "neg":
        if node[1][0] == "num":
            leaves.append(-node[1][1])
            return ("leaf", len(leaves) - 1)
        raise QuestionError("a question may negate a number (-5) but not an expression (-(2+3) or -x)")
    if tag == "x":
        return node
    return (tag, _leafify(node[1], leaves), _leafify(node[2], leaves))


def _plan_expression(node: Node, steps: list[PlanStep]) -> Ref:
    if node[0] == "leaf":
        return ("leaf", node[1])
    left = _plan_expression(node[1], steps)
    right = _plan_expression(node[2], steps)
    steps.append((node[0], left, right))
    return ("step", len(steps) - 1)


# the inverse operation when x sits in the left operand: (left op other = target) -> left = target inv other
_UNDO_LEFT = {"+": "-", "-": "+", "*": "/", "/": "*"}


def _plan_equation(left: Node, right: Node, steps: list[PlanStep]) -> Ref:
    if _count_x(right):
        left, right = right, left
    target = _plan_expression(right, steps)
    node = left
    while node[0] != "x":
        op, first, second = node
        if _count_x(first):
            other = _plan_expression(second, steps)
            steps.append((_UNDO_LEFT[op], target, other))
            node = first
        else:
            other = _plan_expression(first, steps)
            # x on the right: a+x=t -> t-a; a-x=t -> a-t; a*x=t -> t/a; a/x=t -> a/t
            steps.append(
                ("-", target, other) if op == "+" else ("/", target, other) if op == "*" else (op, other, target)
            )
            node = second
        target = ("step", len(steps) - 1)
    return target


def _count_x(node: Node) -> int:
    if node[0] == "x":
        return 1
    if node[0] in ("num", "leaf"):
        return 0
    if node[0] == "neg":
        return _count_x(node[1])
    return _count_x(node[1]) + _count_x(node[2])


def plan_question(tokens: Sequence[int]) -> tuple[list[Value], list[PlanStep], Ref]:
    """Parse a question (token ids) and plan its gold operations.

    Returns:
        the question's numbers in reading order, the planned steps (operands refer to numbers or earlier steps),
        and the reference of the answer.

    Raises:
        QuestionError: if the question does not parse, has no operation, or is an equation without exactly one x.
    """
    try:
        left, right = parse_question(tokens)
    except ParseError as error:
        raise QuestionError(f"question does not parse: {error}") from None
    leaves: list[Value] = []
    steps: list[PlanStep] = []
    left = _leafify(left, leaves)
    if right is None:
        if _count_x(left):
            raise QuestionError("an arithmetic question may not contain x (an equation needs '=')")
        answer = _plan_expression(left, steps)
    else:
        right = _leafify(right, leaves)
        if _count_x(left) + _count_x(right) != 1:
            raise QuestionError("an equation must contain x exactly once")
        answer = _plan_equation(left, right, steps)
    if not steps:
        raise QuestionError("the question needs at least one operation (it would have an empty chain of thought)")
    return leaves, steps, answer


# --- solving: the values -----------------------------------------------------------------------------------------


def _apply(op: str, left: Value, right: Value) -> Value:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if right == 0:
        raise QuestionError("division by zero (an equation without a unique solution, or a zero divisor)")
    return divide(left, right)


def solve_question(tokens: Sequence[int]) -> Solution:
    """The gold :class:`Solution` of a question given as token ids.

    Raises:
        QuestionError: if the question cannot be solved.
    """
    leaves, plan, answer_ref = plan_question(tokens)
    results: list[Value] = []
    alias: dict[int, int] = {}  # planned step index -> index of the written step that holds its value
    seen: dict[tuple, int] = {}
    steps: list[Step] = []

    def value_of(ref: Ref) -> Value:
        return leaves[ref[1]] if ref[0] == "leaf" else results[alias[ref[1]]]

    for index, (op, left_ref, right_ref) in enumerate(plan):
        left, right = value_of(left_ref), value_of(right_ref)
        key = step_key(op, left, right)
        if key in seen:
            alias[index] = seen[key]
            continue
        result = _apply(op, left, right)
        seen[key] = alias[index] = len(steps)
        results.append(result)
        steps.append(Step(op, left, right, result))
    return Solution(tuple(leaves), tuple(steps), Fraction(value_of(answer_ref)))


def solve(problem: Problem | str) -> str:
    """The gold completion of a problem (or question text): ``<think>37+48=85</think><answer>85<eos>``."""
    question = problem if isinstance(problem, str) else problem.question
    return solve_question(encode(question)).completion_text()


def gold_completion_tokens(problem: Problem | str) -> np.ndarray:
    """The gold completion of a problem (or question text) as token ids, shape ``(len,)`` int64."""
    question = problem if isinstance(problem, str) else problem.question
    return solve_question(encode(question)).completion_tokens()
