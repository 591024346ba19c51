"""The vocabulary of the math reasoning environment: token ids, :func:`encode` and :func:`decode`.

Every token is one character except the five special tokens written in angle brackets. The vocabulary is small on
purpose (``V = 24``) so that a tiny transformer can learn it from scratch:

=====  ==========  ===========================================================
id     text        meaning
=====  ==========  ===========================================================
0      ``<pad>``   padding after the last token of the observation buffer
1-10   ``0``-``9``  digits
11-14  ``+-*/``    operators (``-`` is also the sign of a negative number)
15-16  ``()``      parentheses
17     ``=``       equals (inside a step ``37+48=85``, and in equation questions)
18     ``;``       step separator inside the thought
19     ``x``       the unknown of an equation question
20     ``<think>``   think-start
21     ``</think>``  think-end
22     ``<answer>``  answer-start
23     ``<eos>``     end of sequence
=====  ==========  ===========================================================
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "VOCAB",
    "VOCAB_SIZE",
    "PAD",
    "DIGIT_0",
    "DIGIT_9",
    "PLUS",
    "MINUS",
    "TIMES",
    "DIVIDE",
    "LPAREN",
    "RPAREN",
    "EQUALS",
    "SEP",
    "X",
    "THINK",
    "THINK_END",
    "ANSWER",
    "EOS",
    "OPERATORS",
    "SPECIAL_TOKENS",
    "encode",
    "decode",
]

VOCAB: tuple[str, ...] = (
    "<pad>",
    *(str(digit) for digit in range(10)),
    "+",
    "-",
    "*",
    "/",
    "(",
    ")",
    "=",
    ";",
    "x",
    "<think>",
    "</think>",
    "<answer>",
    "<eos>",
)
VOCAB_SIZE = len(VOCAB)

PAD = 0
DIGIT_0 = 1
DIGIT_9 = 10
PLUS = VOCAB.index("+")
MINUS = VOCAB.index("-")
TIMES = VOCAB.index("*")
DIVIDE = VOCAB.index("/")
LPAREN = VOCAB.index("(")
RPAREN = VOCAB.index(")")
EQUALS = VOCAB.index("=")
SEP = VOCAB.index(";")
X = VOCAB.index("x")
THINK = VOCAB.index("<think>")
THINK_END = VOCAB.index("</think>")
ANSWER = VOCAB.index("<answer>")
EOS = VOCAB.index("<eos>")

#: operator token id -> its text
OPERATORS: dict[int, str] = {PLUS: "+", MINUS: "-", TIMES: "*", DIVIDE: "/"}
#: the multi-character tokens, matched before single characters by :func:`encode`
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<think>", "</think>", "<answer>", "<eos>")

_CHAR_TO_ID = {text: index for index, text in enumerate(VOCAB) if len(text) == 1}
_SPECIAL_TO_ID = {text: VOCAB.index(text) for text in SPECIAL_TOKENS}
_ACCEPTED = "digits 0-9, + - * / ( ) = ; x, <think> </think> <answer> <eos> <pad> (whitespace is skipped)"


def encode(text: str) -> np.ndarray:
    """Token ids of ``text``, shape ``(len,)`` int64. Whitespace is skipped; other unknown characters raise.

    Raises:
        ValueError: naming the first character that is not in the vocabulary and its position.
    """
    if not isinstance(text, str):
        raise TypeError(f"encode expects a str, got {type(text).__name__}")
    ids: list[int] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "<":
            for special, token in _SPECIAL_TO_ID.items():
                if text.startswith(special, position):
                    ids.append(token)
                    position += len(special)
                    break
            else:
                raise ValueError(
                    f"cannot encode {text[position : position + 9]!r} at position {position}; accepted: {_ACCEPTED}"
                )
            continue
        if char.isspace():
            position += 1
            continue
        token = _CHAR_TO_ID.get(char)
        if token is None:
            raise ValueError(f"cannot encode {char!r} at position {position} of {text!r}; accepted: {_ACCEPTED}")
        ids.append(token)
        position += 1
    return np.asarray(ids, dtype=np.int64)


def decode(tokens: Iterable[int] | np.ndarray, skip_pad: bool = True) -> str:
    """The text of a token sequence (shape ``(len,)``); PAD tokens are dropped unless ``skip_pad`` is False.

    Raises:
        ValueError: naming a token id outside ``0..V-1``.
    """
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise ValueError(f"decode expects a 1-D token sequence, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= VOCAB_SIZE):
        bad = array[(array < 0) | (array >= VOCAB_SIZE)][0]
        raise ValueError(f"token id {bad} is outside the vocabulary: accepted ids are 0..{VOCAB_SIZE - 1}")
    if skip_pad:
        array = array[array != PAD]
    return "".join(VOCAB[token] for token in array.tolist())
