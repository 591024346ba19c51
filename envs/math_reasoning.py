"""``rlopt/MathReasoning-v0``: arithmetic problems solved token by token, with exact verifiable rewards.

The implementation lives in the package :mod:`envs.math` (one concern per module):

* :mod:`envs.math.tokens`: the vocabulary, :func:`encode`, :func:`decode`;
* :mod:`envs.math.parser`: the exact parser/evaluator of the arithmetic language (ints and Fractions, no ``eval``);
* :mod:`envs.math.solver`: the reference solver, :func:`solve` and :func:`gold_completion_tokens`;
* :mod:`envs.math.problems`: the level table, the vectorised seeded generator and JSONL problem files;
* :mod:`envs.math.verifier`: completion structure and answers (vectorised) and chain-of-thought steps;
* :mod:`envs.math.rewards`: the reward terms, their registry and presets;
* :mod:`envs.math.env`: the batched core and the Gymnasium front ends.

This module re-exports the public API.
"""

from envs.math.env import (
    MathReasoningCore,
    MathReasoningEnv,
    MathReasoningVectorEnv,
    gold_completion,
    gold_completions,
    score_completion,
)
from envs.math.parser import ParseError, evaluate, parse_expression, parse_number
from envs.math.problems import (
    DEFAULT_MAX_LENGTH,
    LEVELS,
    Problem,
    ProblemFileError,
    generate_problems,
    load_problems,
)
from envs.math.rewards import REWARD_PRESETS, REWARD_TERMS, resolve_weights
from envs.math.solver import QuestionError, Solution, gold_completion_tokens, solve, solve_question
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
    VOCAB,
    VOCAB_SIZE,
    X,
    decode,
    encode,
)
from envs.math.verifier import Completions, StepCheck, check_steps, process_share

__all__ = [
    "MathReasoningCore",
    "MathReasoningEnv",
    "MathReasoningVectorEnv",
    "gold_completion",
    "gold_completions",
    "score_completion",
    "ParseError",
    "evaluate",
    "parse_expression",
    "parse_number",
    "DEFAULT_MAX_LENGTH",
    "LEVELS",
    "Problem",
    "ProblemFileError",
    "generate_problems",
    "load_problems",
    "REWARD_PRESETS",
    "REWARD_TERMS",
    "resolve_weights",
    "QuestionError",
    "Solution",
    "gold_completion_tokens",
    "solve",
    "solve_question",
    "VOCAB",
    "VOCAB_SIZE",
    "PAD",
    "DIGIT_0",
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
    "encode",
    "decode",
    "Completions",
    "StepCheck",
    "check_steps",
    "process_share",
]
