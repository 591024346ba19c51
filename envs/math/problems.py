"""Problems: the difficulty levels, a seeded generator vectorised over environments, and JSONL problem files.

Level table (every number of a question is drawn uniformly from its range; ``t`` = number of terms):

=====  ===========================================================================================  ==========
level  families (weight)                                                                            max_length
=====  ===========================================================================================  ==========
1      add/sub: ``a+b``, ``a-b``; t=2, 0..99                                                        32
2      add/sub t=3, 0..99 (1/2); multiplication ``a*b``, 2..20 (1/2)                                48
3      add/sub t=3-4, 0..999 (1/3); multiplication t=2, 2..99 (1/3);                                96
       mixed ``+ - *`` without parentheses t=3, 0..99 (1/3)
4      mixed ``+ - *`` with parentheses t=3-4, 0..99 (1/3); mixed ``+ - *`` t=4 without              96
       parentheses (1/3); equations ``a*x+b=c``, ``a*x-b=c`` (a 2..9, b 0..50, x 0..20) (1/3)
5      mixed ``+ - * /`` t=3-4, 1..50, fractions possible (2/5); multiplication t=3, 2..30 (1/5);    128
       equations, five forms incl. ``a*(x+b)=c``, ``b+a*x=c`` (a 2..12, b 0..99, x -20..20) (2/5)
6      mixed ``+ - * /`` t=4-5, 1..99 (2/5); add/sub t=5, 0..9999 (1/5);                            160
       equations, five forms (a 2..20, b 0..999, x -50..50) (2/5)
=====  ===========================================================================================  ==========

Within a family, each number of terms is equally likely, then each expression shape (operators and parentheses)
of that size. Answers may be negative (``12-37``) and, from level 5, fractions (``(7+8)/2`` = ``15/2``). Equations
always have an integer solution; their right-hand side ``c`` is computed from it and may be negative
(``7*x+30=-5``).

How the generator is vectorised: each level is compiled once into a table of *templates* (a question pattern with
number slots, plus its gold program: which operation on which slots or earlier results, in the solver's order).
A reset draws, per environment and from that environment's :class:`~envs.core.BatchRNG` stream, a template and the
slot numbers, evaluates the program on exact rationals held as int64 numerator/denominator pairs, and writes the
question and gold completion tokens, all as numpy operations over the batch. Drawn problems that break a rule
(division by zero, a value of 12 digits or more, two identical gold steps, a completion that does not fit
``max_length``) are drawn again from the same streams, so a seed still fixes the problem.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from envs.core import BatchRNG
from envs.math.parser import ParseError, parse_number
from envs.math.solver import PlanStep, QuestionError, Ref, Solution, plan_question, solve_question
from envs.math.tokens import (
    ANSWER,
    DIGIT_0,
    DIVIDE,
    EOS,
    EQUALS,
    LPAREN,
    MINUS,
    PAD,
    PLUS,
    RPAREN,
    SEP,
    THINK,
    THINK_END,
    TIMES,
    decode,
    encode,
)

__all__ = [
    "Problem",
    "Arithmetic",
    "Equations",
    "LEVELS",
    "DEFAULT_MAX_LENGTH",
    "MAX_DIGITS",
    "ProblemArrays",
    "ProblemSource",
    "GeneratedProblems",
    "ProblemBank",
    "ProblemFileError",
    "generate_problems",
    "load_problems",
]

#: every number in a generated problem (numerator and denominator alike) has fewer digits than this
MAX_DIGITS = 12
_VALUE_LIMIT = 10**MAX_DIGITS
#: answers in a problem file must stay below this (the vectorised answer check reads up to 18 digits)
_FILE_VALUE_LIMIT = 10**18
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_OP_TOKEN = {"+": PLUS, "-": MINUS, "*": TIMES, "/": DIVIDE}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_MAX_ROUNDS = 200


@dataclass(frozen=True)
class Problem:
    """A question (text in the environment's vocabulary) and its exact answer."""

    question: str
    answer: Fraction


# --- the level table ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arithmetic:
    """A family of arithmetic expressions: every shape with ``terms`` numbers and operators from ``operators``.

    ``parentheses``: True keeps shapes that need at least one pair, False keeps shapes that need none, None keeps
    both. ``mixed`` keeps only shapes that use an additive and a multiplicative operator (precedence matters).
    """

    name: str
    weight: float
    terms: tuple[int, ...]
    low: int
    high: int
    operators: str
    parentheses: bool | None = None
    mixed: bool = False


@dataclass(frozen=True)
class Equations:
    """Linear equations in ``x`` with an integer solution. ``forms`` use ``a`` (drawn from ``coefficient``), ``b``
    (from ``constant``) and ``c`` (the left side evaluated at a solution drawn from ``solution``)."""

    name: str
    weight: float
    forms: tuple[str, ...]
    coefficient: tuple[int, int]
    constant: tuple[int, int]
    solution: tuple[int, int]


_TWO_FORMS = ("a*x+b=c", "a*x-b=c")
_FIVE_FORMS = ("a*x+b=c", "a*x-b=c", "b+a*x=c", "a*(x+b)=c", "a*(x-b)=c")

LEVELS: dict[int, tuple[Arithmetic | Equations, ...]] = {
    1: (Arithmetic("addsub", 1.0, (2,), 0, 99, "+-", parentheses=False),),
    2: (
        Arithmetic("addsub", 0.5, (3,), 0, 99, "+-", parentheses=False),
        Arithmetic("multiplication", 0.5, (2,), 2, 20, "*"),
    ),
    3: (
        Arithmetic("addsub", 1 / 3, (3, 4), 0, 999, "+-", parentheses=False),
        Arithmetic("multiplication", 1 / 3, (2,), 2, 99, "*"),
        Arithmetic("mixed", 1 / 3, (3,), 0, 99, "+-*", parentheses=False, mixed=True),
    ),
    4: (
        Arithmetic("parentheses", 1 / 3, (3, 4), 0, 99, "+-*", parentheses=True),
        Arithmetic("mixed", 1 / 3, (4,), 0, 99, "+-*", parentheses=False, mixed=True),
        Equations("equation", 1 / 3, _TWO_FORMS, (2, 9), (0, 50), (0, 20)),
    ),
    5: (
        Arithmetic("fractions", 0.4, (3, 4), 1, 50, "+-*/", mixed=True),
        Arithmetic("multiplication", 0.2, (3,), 2, 30, "*"),
        Equations("equation", 0.4, _FIVE_FORMS, (2, 12), (0, 99), (-20, 20)),
    ),
    6: (
        Arithmetic("fractions", 0.4, (4, 5), 1, 99, "+-*/", mixed=True),
        Arithmetic("addsub", 0.2, (5,), 0, 9999, "+-", parentheses=False),
        Equations("equation", 0.4, _FIVE_FORMS, (2, 20), (0, 999), (-50, 50)),
    ),
}

#: default observation length per level: at least 1.3 times the longest prompt + gold completion of the level (21,
#: 37, 67, 67, 79, 117 tokens in 50 000 draws), so that no problem is redrawn for length and a policy has room to
#: write more than the gold chain
DEFAULT_MAX_LENGTH: dict[int, int] = {1: 32, 2: 48, 3: 96, 4: 96, 5: 128, 6: 160}


# --- compiling a level into templates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    """A question pattern with numbered slots and the programs that solve (and, for equations, build) it."""

    family: str
    question: tuple[int | Ref, ...]  # token ids, and ("slot", k) where the k-th number goes
    program: tuple[PlanStep, ...]  # gold steps over ("leaf", k) slots and ("step", j) results
    forward: tuple[PlanStep, ...]  # equations: computes slot `derived` from the slots and ("hidden", 0) = x
    derived: int  # slot holding an equation's right-hand side, -1 for arithmetic
    ranges: tuple[tuple[int, int], ...]  # draw range per slot, then one for the hidden x


def _shapes(leaves: int) -> list[tuple]:
    """Every binary tree with ``leaves`` leaves (leaves are ``()``, inner nodes ``(left, right)``)."""
    if leaves == 1:
        return [()]
    return [(left, right) for k in range(1, leaves) for left in _shapes(k) for right in _shapes(leaves - k)]


def _with_operators(shape: tuple, operators: Sequence[str]) -> tuple:
    iterator = iter(operators)

    def build(node: tuple) -> tuple:
        if not node:
            return ("#",)
        op = next(iterator)
        return (op, build(node[0]), build(node[1]))

    return build(shape)


def _render(node: tuple) -> str:
    """Text with the fewest parentheses that keep the tree's value (leaves written ``#``)."""
    if node[0] == "#":
        return "#"
    op, left, right = node
    left_text, right_text = _render(left), _render(right)
    if left[0] != "#" and _PRECEDENCE[left[0]] < _PRECEDENCE[op]:
        left_text = f"({left_text})"
    if right[0] != "#" and (
        _PRECEDENCE[right[0]] < _PRECEDENCE[op] or (_PRECEDENCE[right[0]] == _PRECEDENCE[op] and op in "-/")
    ):
        right_text = f"({right_text})"
    return f"{left_text}{op}{right_text}"


def _pattern(text: str, letters: str) -> tuple[tuple[int | Ref, ...], str, dict[int, str]]:
    """Question items of a pattern whose slots are the characters in ``letters``; also the pattern with each slot
    replaced by a distinct dummy number (to parse it) and the dummy value -> slot letter map."""
    items: list[int | Ref] = []
    filled: list[str] = []
    dummies: dict[int, str] = {}
    slot = 0
    for char in text:
        if char in letters:
            items.append(("slot", slot))
            value = 1001 + slot
            dummies[value] = char
            filled.append(str(value))
            slot += 1
        else:
            items.append(int(encode(char)[0]))
            filled.append(char)
    return tuple(items), "".join(filled), dummies


def _arithmetic_templates(family: Arithmetic, terms: int) -> list[_Template]:
    """Every distinct expression of ``terms`` numbers the family allows, with its gold program.

    Trees are enumerated with every operator assignment and written with the fewest parentheses; trees that read
    the same (``a+(b+c)`` and ``a+b+c``) collapse into one template, solved as the parser reads it.
    """
    texts: dict[str, None] = {}
    for shape in _shapes(terms):
        for operators in itertools.product(family.operators, repeat=terms - 1):
            texts[_render(_with_operators(shape, operators))] = None
    templates = []
    for text in texts:
        has_parentheses = "(" in text
        if family.parentheses is not None and has_parentheses != family.parentheses:
            continue
        if family.mixed and not (set(text) & set("+-") and set(text) & set("*/")):
            continue
        items, filled, _ = _pattern(text, "#")
        _, program, _ = plan_question(encode(filled))
        ranges = ((family.low, family.high),) * terms + ((0, 0),)
        templates.append(_Template(family.name, items, tuple(program), (), -1, ranges))
    return templates


def _equation_template(family: Equations, form: str) -> _Template:
    """A template for an equation form such as ``a*(x+b)=c``: slots a, b, c in reading order, the solver's gold
    program, and a forward program that computes c from a, b and the hidden solution x."""
    left, _, right = form.partition("=")
    if right != "c" or sorted(char for char in left if char.isalpha()) != ["a", "b", "x"]:
        raise ValueError(f"equation form {form!r} must use a, b and x once on the left and be '= c'")
    items, filled, dummies = _pattern(form, "abc")
    leaves, program, _ = plan_question(encode(filled))
    letters = [dummies[int(value)] for value in leaves]
    role = {"a": family.coefficient, "b": family.constant, "c": (0, 0)}
    # the forward program evaluates the left side with x as the hidden draw, giving c
    forward_text = "".join("w" if char == "x" else char for char in left)
    _, forward_filled, forward_dummies = _pattern(forward_text, "abw")
    forward_leaves, forward_steps, _ = plan_question(encode(forward_filled))
    slot_of_letter = {letter: index for index, letter in enumerate(letters)}
    to_drawn: dict[int, Ref] = {}
    for index, value in enumerate(forward_leaves):
        letter = forward_dummies[int(value)]
        to_drawn[index] = ("hidden", 0) if letter == "w" else ("leaf", slot_of_letter[letter])
    forward = tuple(
        (op, to_drawn[a[1]] if a[0] == "leaf" else a, to_drawn[b[1]] if b[0] == "leaf" else b)
        for op, a, b in forward_steps
    )
    ranges = tuple(role[letter] for letter in letters) + (family.solution,)
    return _Template(family.name, items, tuple(program), forward, slot_of_letter["c"], ranges)


@dataclass(frozen=True)
class _LevelTable:
    """A level compiled to padded arrays over its ``T`` templates (``K`` slots, ``S`` gold steps, ``F`` forward)."""

    level: int
    group_cumulative: np.ndarray  # (G,) cumulative weights of the (family, terms) groups, last = 1
    group_start: np.ndarray  # (G,) first template of each group
    group_count: np.ndarray  # (G,) templates in each group
    question: np.ndarray  # (T, Q) token id, or -(k+1) for slot k
    question_length: np.ndarray  # (T,)
    program: np.ndarray  # (T, S, 3) op token, left ref, right ref; ref < K: slot, else step ref-K
    steps: np.ndarray  # (T,)
    forward: np.ndarray  # (T, F, 3) refs: < K slot, K hidden x, > K forward step ref-K-1
    forward_steps: np.ndarray  # (T,)
    derived: np.ndarray  # (T,) slot written by the forward program, -1 for none
    low: np.ndarray  # (T, K+1) draw range per slot and the hidden x
    high: np.ndarray  # (T, K+1)

    @property
    def num_slots(self) -> int:
        """``K``, the most numbers in a question of this level."""
        return self.low.shape[1] - 1


def _ref_index(ref: Ref, slots: int, step_base: int) -> int:
    kind, index = ref
    if kind == "leaf":
        return index
    if kind == "hidden":
        return slots
    return step_base + index


@functools.cache
def _level_table(level: int) -> _LevelTable:
    """Compile a level of :data:`LEVELS` (once per process)."""
    groups: list[tuple[float, list[_Template]]] = []
    for family in LEVELS[level]:
        if isinstance(family, Arithmetic):
            for terms in family.terms:
                groups.append((family.weight / len(family.terms), _arithmetic_templates(family, terms)))
        else:
            groups.append((family.weight, [_equation_template(family, form) for form in family.forms]))
    templates = [template for _, group in groups for template in group]
    slots = max(len(template.ranges) - 1 for template in templates)
    steps = max(len(template.program) for template in templates)
    forward_steps = max(1, max(len(template.forward) for template in templates))
    width = max(len(template.question) for template in templates)
    count = len(templates)
    question = np.zeros((count, width), dtype=np.int64)
    program = np.zeros((count, steps, 3), dtype=np.int64)
    forward = np.zeros((count, forward_steps, 3), dtype=np.int64)
    low = np.zeros((count, slots + 1), dtype=np.int64)
    high = np.zeros((count, slots + 1), dtype=np.int64)
    for t, template in enumerate(templates):
        for i, item in enumerate(template.question):
            question[t, i] = item if isinstance(item, int) else -(item[1] + 1)
        for s, (op, left, right) in enumerate(template.program):
            program[t, s] = (_OP_TOKEN[op], _ref_index(left, slots, slots), _ref_index(right, slots, slots))
        for s, (op, left, right) in enumerate(template.forward):
            forward[t, s] = (_OP_TOKEN[op], _ref_index(left, slots, slots + 1), _ref_index(right, slots, slots + 1))
        for k, (lo, hi) in enumerate(template.ranges[:-1]):
            low[t, k], high[t, k] = lo, hi
        low[t, slots], high[t, slots] = template.ranges[-1]
    weights = np.asarray([weight for weight, _ in groups], dtype=np.float64)
    cumulative = np.cumsum(weights / weights.sum())
    cumulative[-1] = 1.0
    return _LevelTable(
        level=level,
        group_cumulative=cumulative,
        group_start=np.cumsum([0] + [len(group) for _, group in groups[:-1]]).astype(np.int64),
        group_count=np.asarray([len(group) for _, group in groups], dtype=np.int64),
        question=question,
        question_length=np.asarray([len(template.question) for template in templates], dtype=np.int64),
        program=program,
        steps=np.asarray([len(template.program) for template in templates], dtype=np.int64),
        forward=forward,
        forward_steps=np.asarray([len(template.forward) for template in templates], dtype=np.int64),
        derived=np.asarray([template.derived for template in templates], dtype=np.int64),
        low=low,
        high=high,
    )


# --- exact rationals and token writing, vectorised ---------------------------------------------------------------


def _combine(
    op: np.ndarray, ln: np.ndarray, ld: np.ndarray, rn: np.ndarray, rd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``left op right`` on reduced int64 fractions (denominators > 0), shape ``(K,)`` each.

    Returns the reduced result and a ``bad`` mask: division by zero, a product that could overflow int64 (checked
    in float64 first), or a result with ``MAX_DIGITS`` digits or more. Bad entries hold 0/1.
    """
    lnf, ldf, rnf, rdf = (a.astype(np.float64) for a in (ln, ld, rn, rd))
    biggest = np.maximum.reduce([np.abs(lnf * rdf), np.abs(rnf * ldf), ldf * rdf, np.abs(lnf * rnf), np.abs(ldf * rnf)])
    bad = biggest > 2.0**61
    is_mul, is_div = op == TIMES, op == DIVIDE
    with np.errstate(over="ignore"):
        cross_left, cross_right = ln * rd, rn * ld
        numerator = np.where(
            op == PLUS, cross_left + cross_right, np.where(op == MINUS, cross_left - cross_right, cross_left)
        )
        numerator = np.where(is_mul, ln * rn, numerator)
        denominator = np.where(is_div, ld * rn, ld * rd)
    bad |= denominator == 0
    negative = denominator < 0
    numerator = np.where(negative, -numerator, numerator)
    denominator = np.abs(denominator)
    divisor = np.gcd(numerator, denominator)
    divisor[divisor == 0] = 1
    numerator //= divisor
    denominator //= divisor
    bad |= (np.abs(numerator) >= _VALUE_LIMIT) | (denominator >= _VALUE_LIMIT)
    return np.where(bad, 0, numerator), np.where(bad, 1, denominator), bad


def _run_program(
    program: np.ndarray, steps: np.ndarray, numerator: np.ndarray, denominator: np.ndarray, base: int
) -> np.ndarray:
    """Run per-row programs ``(K, S, 3)`` in place: step s writes column ``base + s``. Returns the bad mask."""
    rows = np.arange(program.shape[0])
    bad = np.zeros(program.shape[0], dtype=bool)
    for s in range(program.shape[1]):
        active = s < steps
        if not active.any():
            break
        op, left, right = program[:, s, 0], program[:, s, 1], program[:, s, 2]
        value, scale, wrong = _combine(
            op, numerator[rows, left], denominator[rows, left], numerator[rows, right], denominator[rows, right]
        )
        numerator[:, base + s] = value
        denominator[:, base + s] = scale
        bad |= wrong & active
    return bad


def _digit_count(values: np.ndarray) -> np.ndarray:
    """Decimal digits of non-negative int64 values below ``10**MAX_DIGITS`` (0 has one digit)."""
    return np.maximum(np.searchsorted(_POW10[:MAX_DIGITS], values, side="right"), 1)


def _spell(numerator: np.ndarray, denominator: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of values ``-? n (/ d)?`` (1-D inputs ``(M,)``): ``(M, W)`` PAD-filled, ``W`` the longest here, and the
    lengths ``(M,)``. Column ``j`` is worked out arithmetically from the offsets of the parts (no per-value Python)."""
    magnitude = np.abs(numerator)
    fraction = denominator != 1
    number_start = (numerator < 0).astype(np.int64)
    slash = number_start + _digit_count(magnitude)
    denominator_start = slash + fraction
    lengths = denominator_start + np.where(fraction, _digit_count(denominator), 0)
    width = max(int(lengths.max(initial=1)), 1)
    j = np.arange(width)
    digits_n = (magnitude[:, None] // _POW10[np.clip(slash[:, None] - 1 - j, 0, MAX_DIGITS)]) % 10
    digits_d = (denominator[:, None] // _POW10[np.clip(lengths[:, None] - 1 - j, 0, MAX_DIGITS)]) % 10
    in_number = (j >= number_start[:, None]) & (j < slash[:, None])
    in_denominator = (j >= denominator_start[:, None]) & (j < lengths[:, None])
    tokens = np.where(in_number, DIGIT_0 + digits_n, np.where(in_denominator, DIGIT_0 + digits_d, PAD))
    tokens[:, 0] = np.where(number_start == 1, MINUS, tokens[:, 0])
    tokens = np.where((j == slash[:, None]) & fraction[:, None], DIVIDE, tokens)
    return tokens, lengths


#: integers of magnitude below this are spelled from a table (most numbers of levels 1-4)
_TABLE_LIMIT = 100_000


@functools.cache
def _integer_table() -> tuple[np.ndarray, np.ndarray]:
    """Tokens ``(2 * limit - 1, 6)`` int8 and lengths of every integer in ``(-limit, limit)``; row ``v + limit - 1``."""
    values = np.arange(-_TABLE_LIMIT + 1, _TABLE_LIMIT, dtype=np.int64)
    tokens, lengths = _spell(values, np.ones_like(values))
    return tokens.astype(np.int8), lengths


def _written_values(numerator: np.ndarray, denominator: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of values ``-? n (/ d)?``: ``(..., W)`` PAD-filled and lengths ``(...)``; ``W`` is the longest here."""
    shape = numerator.shape
    flat_n, flat_d = numerator.reshape(-1), denominator.reshape(-1)
    table, table_lengths = _integer_table()
    small = (flat_d == 1) & (np.abs(flat_n) < _TABLE_LIMIT)
    if small.all():
        index = flat_n + (_TABLE_LIMIT - 1)
        tokens, lengths = table[index], table_lengths[index]
    else:
        large_tokens, large_lengths = _spell(flat_n[~small], flat_d[~small])
        tokens = np.zeros((flat_n.size, max(table.shape[1], large_tokens.shape[1])), dtype=np.int8)
        lengths = np.zeros(flat_n.size, dtype=np.int64)
        index = flat_n[small] + (_TABLE_LIMIT - 1)
        tokens[small, : table.shape[1]] = table[index]
        lengths[small] = table_lengths[index]
        tokens[~small, : large_tokens.shape[1]] = large_tokens
        lengths[~small] = large_lengths
    return tokens.reshape(*shape, tokens.shape[1]), lengths.reshape(shape)


#: one piece of a row: a token for every row (int), a token per row ``(K,)`` or a written value ``(K, W)``, with its
#: length per row ``(K,)`` (or one int for every row)
Piece = tuple["int | np.ndarray", "int | np.ndarray"]


def _join_pieces(pieces: Sequence[Piece], count: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate pieces into ``(K, width)`` rows, PAD after; also the total lengths ``(K,)`` (above ``width``: the
    row did not fit and is cut).

    Each piece is written whole at its row's offset, in order. The next piece starts where the valid part of this
    one ends, so it overwrites whatever padding this one wrote past its length, and every position before the total
    length ends up written by the piece it belongs to; only the tail needs clearing. That keeps it to one flat
    fancy assignment per piece: no masks, no clipping (each row has room for every piece at full width).
    """
    widths = [tokens.shape[1] if isinstance(tokens, np.ndarray) and tokens.ndim == 2 else 1 for tokens, _ in pieces]
    stride = max(width, sum(widths))
    out = np.empty(count * stride, dtype=np.int64)
    offset = np.arange(count) * stride
    start = offset.copy()
    for (tokens, lengths), piece_width in zip(pieces, widths, strict=True):
        if piece_width > 1:
            out[offset[:, None] + np.arange(piece_width)] = tokens
        else:
            out[offset] = tokens
        offset += lengths
    total = offset - start
    out = out.reshape(count, stride)[:, :width]
    out[np.arange(width) >= total[:, None]] = PAD
    return out, total


# --- problem sources ---------------------------------------------------------------------------------------------


@dataclass
class ProblemArrays:
    """Problems for ``K`` environments, as the environment stores them (``L`` = max_length)."""

    prompt: np.ndarray  # (K, L) question tokens, PAD after
    prompt_length: np.ndarray  # (K,)
    gold: np.ndarray  # (K, L) gold completion tokens, PAD after
    gold_length: np.ndarray  # (K,)
    answer_numerator: np.ndarray  # (K,) int64, the answer reduced, denominator > 0
    answer_denominator: np.ndarray  # (K,)
    gold_steps: np.ndarray  # (K,) steps in the gold chain of thought

    def problem(self, index: int) -> Problem:
        """Row ``index`` as a :class:`Problem`."""
        question = decode(self.prompt[index, : self.prompt_length[index]])
        return Problem(question, Fraction(int(self.answer_numerator[index]), int(self.answer_denominator[index])))


class ProblemSource(Protocol):
    """Where an environment's problems come from; :meth:`draw` must use only ``rng`` for randomness."""

    max_length: int

    def draw(self, rng: BatchRNG, indices: np.ndarray) -> ProblemArrays:
        """Problems for the environments ``indices``, drawn from their streams of ``rng``."""
        ...


class GeneratedProblems:
    """Problems of one level of :data:`LEVELS`, generated on the fly (vectorised) at each reset."""

    def __init__(self, level: int, max_length: int | None = None) -> None:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or int(level) not in LEVELS:
            raise ValueError(f"unknown level {level!r}; accepted levels: {sorted(LEVELS)}")
        self.level = int(level)
        self.table = _level_table(self.level)
        self.max_length = DEFAULT_MAX_LENGTH[self.level] if max_length is None else max_length
        # fail early, with a useful message, if most problems of the level cannot fit max_length
        probe = self._candidates(np.random.default_rng(0).random((512, self.table.num_slots + 3)))
        fits, rejected = probe[0], probe[1]
        if fits[~rejected].mean() < 0.5:
            lengths = probe[2].prompt_length + probe[2].gold_length
            needed = int(np.percentile(lengths[~probe[1]], 99)) if (~probe[1]).any() else self.max_length
            raise ValueError(
                f"max_length={self.max_length} is too small for level {self.level}: most problems need more "
                f"(prompt + gold completion up to about {needed} tokens); pass max_length>={needed}"
            )

    def draw(self, rng: BatchRNG, indices: np.ndarray) -> ProblemArrays:
        indices = np.asarray(indices)
        out: ProblemArrays | None = None
        pending = np.arange(len(indices))
        for _ in range(_MAX_ROUNDS):
            draws = rng.random(indices[pending], size=self.table.num_slots + 3)
            fits, rejected, arrays = self._candidates(draws)
            accept = fits & ~rejected
            if out is None:
                out = arrays  # the first round fills every row; later rounds overwrite the rejected ones
            else:
                for name, value in vars(arrays).items():
                    getattr(out, name)[pending[accept]] = value[accept]
            pending = pending[~accept]
            if not pending.size:
                return out
        raise RuntimeError(
            f"level {self.level}: could not draw a valid problem that fits max_length={self.max_length} in "
            f"{_MAX_ROUNDS} tries; raise max_length"
        )

    def _candidates(self, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, ProblemArrays]:
        """Problems from uniform draws ``(K, slots + 3)``: (fits max_length, rejected by a rule, the arrays)."""
        table = self.table
        count = draws.shape[0]
        rows = np.arange(count)
        slots = table.num_slots
        group = np.minimum(
            np.searchsorted(table.group_cumulative, draws[:, 0], side="right"), len(table.group_start) - 1
        )
        template = table.group_start[group] + np.minimum(
            (draws[:, 1] * table.group_count[group]).astype(np.int64), table.group_count[group] - 1
        )
        low, high = table.low[template], table.high[template]
        drawn = low + np.floor(draws[:, 2 : 3 + slots] * (high - low + 1)).astype(np.int64)

        # equations: c = left side evaluated at the hidden x
        rejected = np.zeros(count, dtype=bool)
        derived = table.derived[template]
        is_equation = derived >= 0
        if is_equation.any():
            forward = table.forward.shape[1]
            numerator = np.concatenate([drawn, np.zeros((count, forward), np.int64)], axis=1)
            denominator = np.ones_like(numerator)
            rejected |= _run_program(
                table.forward[template], table.forward_steps[template], numerator, denominator, slots + 1
            )
            last = slots + np.maximum(table.forward_steps[template], 1)
            value, scale = numerator[rows, last], denominator[rows, last]
            rejected |= is_equation & (scale != 1)
            drawn[is_equation, derived[is_equation]] = value[is_equation]

        # the gold program on exact rationals
        steps = table.steps[template]
        width = table.program.shape[1]
        numerator = np.concatenate([drawn[:, :slots], np.zeros((count, width), np.int64)], axis=1)
        denominator = np.ones_like(numerator)
        rejected |= _run_program(table.program[template], steps, numerator, denominator, slots)
        program = table.program[template]
        left_n, left_d = numerator[rows[:, None], program[:, :, 1]], denominator[rows[:, None], program[:, :, 1]]
        right_n, right_d = numerator[rows[:, None], program[:, :, 2]], denominator[rows[:, None], program[:, :, 2]]
        rejected |= _duplicate_steps(program[:, :, 0], left_n, left_d, right_n, right_d, steps)
        answer_n = numerator[rows, slots + steps - 1]
        answer_d = denominator[rows, slots + steps - 1]

        # tokens: each value (slot or step result) is written once, then gathered into the question and the steps
        values, value_lengths = _written_values(numerator[:, : slots + width], denominator[:, : slots + width])
        prompt, prompt_length = self._question_tokens(template, values[:, :slots], value_lengths[:, :slots])
        parenthesize = (right_n < 0) | (right_d != 1)
        gold, gold_length = self._gold_tokens(program, steps, parenthesize, values, value_lengths)
        fits = prompt_length + gold_length <= self.max_length
        arrays = ProblemArrays(prompt, prompt_length, gold, gold_length, answer_n, answer_d, steps)
        return fits, rejected, arrays

    def _question_tokens(
        self, template: np.ndarray, numbers: np.ndarray, number_lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The question of each row: template items ``(K, Q)`` with slot ``k`` replaced by the written number k.

        Each item becomes two pieces, a token (length 0 where the item is a slot) and a number (length 0 where it
        is a token), which avoids building a ``(K, Q, W)`` array of mixed items."""
        items = self.table.question[template]  # (K, Q)
        count, width = items.shape
        is_slot = items < 0
        slot = np.where(is_slot, -items - 1, 0)
        rows = np.arange(count)
        present = np.arange(width) < self.table.question_length[template][:, None]
        token_lengths = (present & ~is_slot).astype(np.int64)
        number_lengths = np.where(is_slot, number_lengths[rows[:, None], slot], 0)
        pieces: list[Piece] = []
        for q in range(width):
            pieces += [(items[:, q], token_lengths[:, q]), (numbers[rows, slot[:, q]], number_lengths[:, q])]
        return _join_pieces(pieces, count, self.max_length)

    def _gold_tokens(
        self,
        program: np.ndarray,
        steps: np.ndarray,
        parenthesize: np.ndarray,
        values: np.ndarray,
        value_lengths: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``<think> l op (r) = v ; ... </think> <answer> a <eos>``: ``program`` ``(K, S, 3)``, ``parenthesize``
        ``(K, S)`` for right operands, and the written values ``(K, slots + S, W)`` with their lengths."""
        count, width = program.shape[:2]
        slots = values.shape[1] - width
        rows = np.arange(count)
        pieces: list[Piece] = [(THINK, 1)]
        for s in range(width):
            active = (s < steps).astype(np.int64)
            left, right, result = program[:, s, 1], program[:, s, 2], slots + s
            brackets = parenthesize[:, s] * active
            pieces += [
                (values[rows, left], value_lengths[rows, left] * active),
                (program[:, s, 0], active),
                (LPAREN, brackets),
                (values[rows, right], value_lengths[rows, right] * active),
                (RPAREN, brackets),
                (EQUALS, active),
                (values[:, result], value_lengths[:, result] * active),
                (SEP, (s < steps - 1).astype(np.int64)),
            ]
        answer = slots + steps - 1
        pieces += [(THINK_END, 1), (ANSWER, 1), (values[rows, answer], value_lengths[rows, answer]), (EOS, 1)]
        return _join_pieces(pieces, count, self.max_length)


def _duplicate_steps(
    op: np.ndarray, left_n: np.ndarray, left_d: np.ndarray, right_n: np.ndarray, right_d: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """Rows ``(K,)`` whose gold program repeats an operation (same operator and operands, unordered for + and *)."""
    commutative = (op == PLUS) | (op == TIMES)
    swap = commutative & ((left_n > right_n) | ((left_n == right_n) & (left_d > right_d)))
    key = np.stack(
        [
            op,
            np.where(swap, right_n, left_n),
            np.where(swap, right_d, left_d),
            np.where(swap, left_n, right_n),
            np.where(swap, left_d, right_d),
        ],
        axis=-1,
    )  # (K, S, 5)
    duplicate = np.zeros(op.shape[0], dtype=bool)
    for s in range(op.shape[1]):
        for t in range(s + 1, op.shape[1]):
            duplicate |= (t < steps) & np.all(key[:, s] == key[:, t], axis=1)
    return duplicate


class ProblemFileError(ValueError):
    """A JSONL problem file that cannot be used; the message names the file and line."""


def _read_records(path: str | Path) -> list[tuple[int, Problem, Solution]]:
    path = Path(path)
    if not path.is_file():
        raise ProblemFileError(f"problem file {str(path)!r} does not exist or is not a file")
    records: list[tuple[int, Problem, Solution]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ProblemFileError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or "question" not in record or "answer" not in record:
                raise ProblemFileError(
                    f'{where}: expected an object {{"question": ..., "answer": ...}}, got {line.strip()[:80]!r}'
                )
            question, answer = record["question"], record["answer"]
            if not isinstance(question, str):
                raise ProblemFileError(f"{where}: question must be a string, got {type(question).__name__}")
            try:
                tokens = encode(question)
            except ValueError as error:
                raise ProblemFileError(f"{where}: question {question!r}: {error}") from None
            try:
                solution = solve_question(tokens)
            except QuestionError as error:
                raise ProblemFileError(f"{where}: question {question!r} cannot be solved: {error}") from None
            expected = _parse_answer(answer, where)
            if expected != solution.answer:
                raise ProblemFileError(
                    f"{where}: answer {answer!r} does not match the value of {question!r}, which is {solution.answer}"
                )
            if abs(expected.numerator) >= _FILE_VALUE_LIMIT or expected.denominator >= _FILE_VALUE_LIMIT:
                raise ProblemFileError(f"{where}: answer {answer!r} is too large (at most 18 digits accepted)")
            records.append((number, Problem(decode(tokens), expected), solution))
    if not records:
        raise ProblemFileError(f"problem file {str(path)!r} holds no problems")
    return records


def _parse_answer(answer: object, where: str) -> Fraction:
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise ProblemFileError(
            f"{where}: answer must be an integer or a string such as '-7' or '3/2', got {type(answer).__name__} "
            f"{answer!r}"
        )
    if isinstance(answer, int):
        return Fraction(answer)
    try:
        return Fraction(parse_number(encode(answer.strip())))
    except (ParseError, ValueError):
        raise ProblemFileError(f"{where}: answer {answer!r} is not a number such as '-7' or '3/2'") from None


def load_problems(path: str | Path) -> list[Problem]:
    """Read a JSONL file of ``{"question": "37+48", "answer": 85}`` records (answers may be strings like ``"3/2"``).

    Every question must be in the environment's language and solvable by the reference solver, and every answer
    must equal the question's value. Blank lines are skipped.

    Raises:
        ProblemFileError: naming the file and line of the first bad record.
    """
    return [problem for _, problem, _ in _read_records(path)]


class ProblemBank:
    """A fixed list of problems (from a JSONL file); each reset draws one uniformly from the env's stream."""

    def __init__(self, path: str | Path, max_length: int | None = None) -> None:
        records = _read_records(path)
        prompts = [encode(problem.question) for _, problem, _ in records]
        golds = [solution.completion_tokens() for _, _, solution in records]
        longest = max(len(prompt) + len(gold) for prompt, gold in zip(prompts, golds, strict=True))
        # default: room for the longest gold completion plus half of it again for exploration, in steps of 16
        self.max_length = max(32, 16 * math.ceil(1.5 * longest / 16)) if max_length is None else max_length
        for (number, _, _), prompt, gold in zip(records, prompts, golds, strict=True):
            if len(prompt) + len(gold) > self.max_length:
                raise ProblemFileError(
                    f"{path}:{number}: the question ({len(prompt)} tokens) and its gold completion ({len(gold)} "
                    f"tokens) do not fit max_length={self.max_length}; pass max_length>={len(prompt) + len(gold)}"
                )
        count, length = len(records), self.max_length
        self.problems = [problem for _, problem, _ in records]
        self.arrays = ProblemArrays(
            np.zeros((count, length), np.int64),
            np.asarray([len(prompt) for prompt in prompts], dtype=np.int64),
            np.zeros((count, length), np.int64),
            np.asarray([len(gold) for gold in golds], dtype=np.int64),
            np.asarray([problem.answer.numerator for problem in self.problems], dtype=np.int64),
            np.asarray([problem.answer.denominator for problem in self.problems], dtype=np.int64),
            np.asarray([len(solution.steps) for _, _, solution in records], dtype=np.int64),
        )
        for i, (prompt, gold) in enumerate(zip(prompts, golds, strict=True)):
            self.arrays.prompt[i, : len(prompt)] = prompt
            self.arrays.gold[i, : len(gold)] = gold

    def draw(self, rng: BatchRNG, indices: np.ndarray) -> ProblemArrays:
        chosen = rng.integers(np.asarray(indices), 0, len(self.problems))
        return ProblemArrays(**{name: value[chosen] for name, value in vars(self.arrays).items()})


def generate_problems(level: int, seeds: Sequence[int], max_length: int | None = None) -> list[Problem]:
    """The problems that ``reset(seed=s)`` gives at ``level`` for each ``s`` in ``seeds``."""
    source = GeneratedProblems(level, max_length)
    rng = BatchRNG(len(seeds))
    indices = np.arange(len(seeds))
    rng.seed(indices, [int(seed) for seed in seeds])
    arrays = source.draw(rng, indices)
    return [arrays.problem(i) for i in range(len(seeds))]
