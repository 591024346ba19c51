"""An exact parser and evaluator for the environment's arithmetic language, over token ids (never ``eval``).

Grammar (precedence climbing, left-associative, ``-`` also unary)::

    question  := expr | expr '=' expr            (an equation must contain 'x' exactly once)
    expr      := term (('+' | '-') term)*
    term      := factor (('*' | '/') factor)*
    factor    := '-' factor | '(' expr ')' | digits | 'x'
    number    := '-'? digits ('/' digits)?      (answers and right-hand sides of steps)

Trees are tuples: ``("num", int)``, ``("x",)``, ``("neg", child)`` and ``(op, left, right)`` with ``op`` one of
``"+" "-" "*" "/"``. Values are exact: ``int`` where integral, :class:`fractions.Fraction` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from envs.math.tokens import (
    DIGIT_0,
    DIGIT_9,
    DIVIDE,
    EQUALS,
    LPAREN,
    MINUS,
    OPERATORS,
    PLUS,
    RPAREN,
    TIMES,
    VOCAB,
    VOCAB_SIZE,
    X,
)

__all__ = [
    "Node",
    "Value",
    "ParseError",
    "parse_expression",
    "parse_question",
    "parse_number",
    "evaluate",
    "divide",
    "contains_x",
    "value_tokens",
    "digit_runs",
]

Node = tuple
Value = int | Fraction


class ParseError(ValueError):
    """A token sequence that is not a sentence of the arithmetic language."""


class _Parser:
    """Recursive descent over a list of token ids; ``position`` is the next unread token."""

    def __init__(self, tokens: Sequence[int], allow_x: bool) -> None:
        self.tokens = _as_list(tokens)
        self.position = 0
        self.allow_x = allow_x

    def peek(self) -> int:
        return self.tokens[self.position] if self.position < len(self.tokens) else -1

    def unexpected(self) -> ParseError:
        token = self.peek()
        if token < 0:
            return ParseError(f"unexpected end after {self.position} tokens")
        text = VOCAB[token] if token < VOCAB_SIZE else str(token)
        return ParseError(f"unexpected {text!r} at token {self.position}")

    def expression(self) -> Node:
        node = self.term()
        while self.peek() in (PLUS, MINUS):
            op = OPERATORS[self.tokens[self.position]]
            self.position += 1
            node = (op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.peek() in (TIMES, DIVIDE):
            op = OPERATORS[self.tokens[self.position]]
            self.position += 1
            node = (op, node, self.factor())
        return node

    def factor(self) -> Node:
        token = self.peek()
        if token == MINUS:
            self.position += 1
            return ("neg", self.factor())
        if token == LPAREN:
            self.position += 1
            node = self.expression()
            if self.peek() != RPAREN:
                raise self.unexpected()
            self.position += 1
            return node
        if DIGIT_0 <= token <= DIGIT_9:
            return ("num", self.digits())
        if token == X and self.allow_x:
            self.position += 1
            return ("x",)
        raise self.unexpected()

    def digits(self) -> int:
        value = 0
        start = self.position
        while self.position < len(self.tokens) and DIGIT_0 <= self.tokens[self.position] <= DIGIT_9:
            value = value * 10 + self.tokens[self.position] - DIGIT_0
            self.position += 1
        if self.position == start:
            raise ParseError(f"expected a digit at position {start}")
        return value


def _as_list(tokens: Sequence[int]) -> list[int]:
    """Plain Python ints (numpy scalars would leak into Fractions and slow every operation)."""
    return tokens.tolist() if hasattr(tokens, "tolist") else [int(token) for token in tokens]


def parse_expression(tokens: Sequence[int], allow_x: bool = False) -> Node:
    """The tree of an expression that spans all of ``tokens`` (token ids).

    Raises:
        ParseError: if the tokens are not exactly one expression (nesting too deep for the stack counts as such).
    """
    parser = _Parser(tokens, allow_x)
    try:
        node = parser.expression()
    except RecursionError:
        raise ParseError("expression nested too deeply") from None
    if parser.position != len(parser.tokens):
        raise parser.unexpected()
    return node


def parse_question(tokens: Sequence[int]) -> tuple[Node, Node | None]:
    """``(expression, None)`` for an arithmetic question, ``(left, right)`` for an equation ``left = right``.

    ``x`` is accepted on either side; whether it belongs there is the solver's question.
    """
    tokens = _as_list(tokens)
    if tokens.count(EQUALS) > 1:
        raise ParseError("a question holds at most one '='")
    if EQUALS not in tokens:
        return parse_expression(tokens, allow_x=True), None
    split = tokens.index(EQUALS)
    return parse_expression(tokens[:split], allow_x=True), parse_expression(tokens[split + 1 :], allow_x=True)


def parse_number(tokens: Sequence[int]) -> Value:
    """The value of a number literal ``-? digits ( / digits )?`` spanning all of ``tokens``.

    Raises:
        ParseError: for anything else, including a zero denominator.
    """
    tokens = _as_list(tokens)
    negative = bool(tokens) and tokens[0] == MINUS
    body = tokens[1:] if negative else tokens
    if DIVIDE in body:
        split = body.index(DIVIDE)
        numerator, denominator = _digits_value(body[:split]), _digits_value(body[split + 1 :])
        if denominator == 0:
            raise ParseError("zero denominator")
        value: Value = Fraction(numerator, denominator)
        if value.denominator == 1:
            value = value.numerator
    else:
        value = _digits_value(body)
    return -value if negative else value


def _digits_value(tokens: Sequence[int]) -> int:
    if not tokens or any(not DIGIT_0 <= token <= DIGIT_9 for token in tokens):
        raise ParseError("expected digits")
    value = 0
    for token in tokens:
        value = value * 10 + token - DIGIT_0
    return value


def evaluate(node: Node) -> Value:
    """The exact value of an x-free tree (``int`` where integral).

    Raises:
        ZeroDivisionError: on division by zero.
        ValueError: if the tree contains ``x``.
    """
    tag = node[0]
    if tag == "num":
        return node[1]
    if tag == "neg":
        return -evaluate(node[1])
    if tag == "x":
        raise ValueError("cannot evaluate an expression that contains x")
    left, right = evaluate(node[1]), evaluate(node[2])
    if tag == "+":
        return left + right
    if tag == "-":
        return left - right
    if tag == "*":
        return left * right
    return divide(left, right)


def divide(left: Value, right: Value) -> Value:
    """``left / right`` exactly: an ``int`` where the quotient is whole, else a Fraction.

    Raises:
        ZeroDivisionError: if ``right`` is 0.
    """
    if isinstance(left, int) and isinstance(right, int):
        if right == 0:
            raise ZeroDivisionError("division by zero")
        return left // right if left % right == 0 else Fraction(left, right)
    value = Fraction(left) / Fraction(right)
    return value.numerator if value.denominator == 1 else value


def contains_x(node: Node) -> bool:
    """Whether the tree mentions the unknown ``x``."""
    tag = node[0]
    if tag == "x":
        return True
    if tag == "num":
        return False
    if tag == "neg":
        return contains_x(node[1])
    return contains_x(node[1]) or contains_x(node[2])


def value_tokens(value: Value, parenthesize: bool = False) -> list[int]:
    """Token ids of a value written as ``-? n (/ d)?``; wrapped in parentheses if ``parenthesize`` is set."""
    value = Fraction(value)
    out = [LPAREN] if parenthesize else []
    if value < 0:
        out.append(MINUS)
    out.extend(DIGIT_0 + int(char) for char in str(abs(value.numerator)))
    if value.denominator != 1:
        out.append(DIVIDE)
        out.extend(DIGIT_0 + int(char) for char in str(value.denominator))
    if parenthesize:
        out.append(RPAREN)
    return out


def digit_runs(tokens: Sequence[int]) -> list[int]:
    """The integers written in a token sequence (maximal runs of digits), in order."""
    numbers: list[int] = []
    value = -1
    for token in _as_list(tokens):
        if DIGIT_0 <= token <= DIGIT_9:
            value = (0 if value < 0 else value * 10) + token - DIGIT_0
        elif value >= 0:
            numbers.append(value)
            value = -1
    if value >= 0:
        numbers.append(value)
    return numbers
