"""rlopt/MathReasoning-v0: tokens, generator, solver, verifier, reward terms, adversarial completions, JSONL files,
the Gymnasium front ends and bad input."""

from __future__ import annotations

import ast
import json
import operator
import re
from fractions import Fraction
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  (registers the ids)
from envs.core import InvalidActionError
from envs.math.problems import GeneratedProblems
from envs.math.verifier import Completions, parse_answer
from envs.math_reasoning import (
    ANSWER,
    DEFAULT_MAX_LENGTH,
    EOS,
    LEVELS,
    PAD,
    REWARD_PRESETS,
    REWARD_TERMS,
    SEP,
    THINK,
    THINK_END,
    VOCAB,
    VOCAB_SIZE,
    MathReasoningEnv,
    ProblemFileError,
    QuestionError,
    check_steps,
    decode,
    encode,
    generate_problems,
    gold_completion,
    gold_completion_tokens,
    gold_completions,
    load_problems,
    process_share,
    resolve_weights,
    score_completion,
    solve,
    solve_question,
)

ENV_ID = "rlopt/MathReasoning-v0"
OUTCOME_MAX = 1.1  # accuracy 1.0 + format 0.1
COT_MAX = 1.6  # accuracy 1.0 + format 0.1 + process 0.5


# --- an independent exact evaluator for the tests (Python's ast over our own generated text, Fractions) ----------

_AST_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _reference_value(text: str, x: Fraction | None = None) -> Fraction:
    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp):
            return _AST_OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.Name) and node.id == "x" and x is not None:
            return x
        raise AssertionError(f"unexpected node {ast.dump(node)} in {text!r}")

    return walk(ast.parse(text, mode="eval"))


def _run_episode(env: gym.Env, tokens: np.ndarray) -> tuple[float, bool, bool, dict]:
    """Step a single env through ``tokens``; returns the last reward, terminated, truncated and info."""
    reward, terminated, truncated, info = 0.0, False, False, {}
    for token in tokens:
        _, reward, terminated, truncated, info = env.step(int(token))
        if terminated or truncated:
            break
    return reward, terminated, truncated, info


# --- tokens ------------------------------------------------------------------------------------------------------


def test_vocabulary_layout_and_round_trip() -> None:
    assert VOCAB_SIZE == len(VOCAB) == 24 and VOCAB[PAD] == "<pad>" and VOCAB[EOS] == "<eos>"
    text = "".join(VOCAB[1:])
    assert decode(encode(text)) == text
    assert encode(text).dtype == np.int64 and list(encode(text)) == list(range(1, VOCAB_SIZE))
    gold = "12*(3-45)/x=6;7<think>1+2=3;3*4=12</think><answer>-3/2<eos>"
    assert decode(encode(gold)) == gold
    assert decode(encode(" 3 + 4 ")) == "3+4"  # whitespace is skipped
    assert decode([THINK, PAD, EOS]) == "<think><eos>" and decode([THINK, PAD], skip_pad=False) == "<think><pad>"


@pytest.mark.parametrize(
    ("text", "bad"), [("3.5", "'.'"), ("2^3", "'^'"), ("<thinking>", "'<thinking"), ("a+1", "'a'")]
)
def test_encode_names_the_bad_character(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(bad)):
        encode(text)


def test_decode_rejects_ids_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="token id 24 is outside the vocabulary"):
        decode([1, 24])
    with pytest.raises(ValueError, match="token id -1"):
        decode(np.array([-1]))


# --- generator ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_generator_is_deterministic_per_seed_and_level(level: int) -> None:
    seeds = list(range(40))
    first = generate_problems(level, seeds)
    assert first == generate_problems(level, seeds)
    assert len({problem.question for problem in first}) > 30
    # the batch does not matter: seed s alone gives the same problem as seed s inside a batch
    assert generate_problems(level, [seeds[7]]) == [first[7]]


def test_levels_grow_as_documented() -> None:
    level_one = generate_problems(1, range(300))
    assert all(re.fullmatch(r"\d{1,2}[+-]\d{1,2}", problem.question) for problem in level_one)
    assert {"+", "-"} <= {char for problem in level_one for char in problem.question}
    questions = {level: [problem.question for problem in generate_problems(level, range(400))] for level in LEVELS}
    assert any("*" in q for q in questions[2]) and not any("(" in q for q in questions[2])
    assert any(re.search(r"[+-].*\*|\*.*[+-]", q) for q in questions[3])  # precedence
    assert any("(" in q for q in questions[4]) and any("x" in q for q in questions[4])
    assert any(problem.answer.denominator > 1 for problem in generate_problems(5, range(400)))
    assert max(len(re.findall(r"\d+", q)) for q in questions[6]) == 5


def test_env_reset_gives_the_generated_problem_and_vector_slots_agree() -> None:
    single = gym.make(ENV_ID, level=3)
    vector = gym.make_vec(ENV_ID, num_envs=3, level=3)
    observations, _ = vector.reset(seed=[5, 9, 11])
    for slot, seed in enumerate([5, 9, 11]):
        observation, info = single.reset(seed=seed)
        np.testing.assert_array_equal(observation, observations[slot])
        problem = generate_problems(3, [seed])[0]
        assert decode(observation) == problem.question
        assert info["prompt_length"] == len(problem.question)
    assert single.unwrapped.core.problem(0) == problem


# --- solver ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_solver_agrees_with_fraction_arithmetic(level: int) -> None:
    for problem in generate_problems(level, range(1000, 1150)):
        solution = solve_question(encode(problem.question))
        assert solution.answer == problem.answer
        if "=" in problem.question:
            left, right = problem.question.split("=")
            assert _reference_value(left, problem.answer) == _reference_value(right), problem
        else:
            assert _reference_value(problem.question) == problem.answer, problem
        for step in solution.steps:  # every gold step is true arithmetic
            assert _reference_value(decode(step.tokens()).split("=")[0]) == step.result
        # and the verifier's step reader, not only its gold fast path, gives the gold chain full process credit
        completion = solution.completion_tokens()
        thought = completion[1 : list(completion).index(THINK_END)]
        assert process_share(encode(problem.question), thought, len(solution.steps)) == 1.0, problem
        text = solve(problem)
        assert text.startswith("<think>") and text.endswith(f"</think><answer>{problem.answer}<eos>")
        assert text.count(";") == len(solution.steps) - 1


@pytest.mark.parametrize(
    ("question", "completion"),
    [
        ("37+48", "<think>37+48=85</think><answer>85<eos>"),
        ("37+48*2", "<think>48*2=96;37+96=133</think><answer>133<eos>"),
        ("3*x+5=20", "<think>20-5=15;15/3=5</think><answer>5<eos>"),
        ("20=5+3*x", "<think>20-5=15;15/3=5</think><answer>5<eos>"),
        ("12-x=5", "<think>12-5=7</think><answer>7<eos>"),
        ("24/x=6", "<think>24/6=4</think><answer>4<eos>"),
        ("4*(x-7)=8", "<think>8/4=2;2+7=9</think><answer>9<eos>"),
        ("10-(3-28)", "<think>3-28=-25;10-(-25)=35</think><answer>35<eos>"),
        ("(7+8)/2", "<think>7+8=15;15/2=15/2</think><answer>15/2<eos>"),
        ("1/(15/2)", "<think>15/2=15/2;1/(15/2)=2/15</think><answer>2/15<eos>"),
        ("(3+4)*(3+4)", "<think>3+4=7;7*7=49</think><answer>49<eos>"),  # a repeated operation is written once
        ("-5+3", "<think>-5+3=-2</think><answer>-2<eos>"),
    ],
)
def test_solver_writes_steps_in_precedence_order(question: str, completion: str) -> None:
    assert solve(question) == completion
    np.testing.assert_array_equal(gold_completion_tokens(question), encode(completion))


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("x+x=4", "exactly once"),
        ("5", "at least one operation"),
        ("x=5", "at least one operation"),
        ("0*x=5", "division by zero"),
        ("4/(2-2)", "division by zero"),
        ("-(2+3)", "not an expression"),
        ("2+", "does not parse"),
        ("3+x", "may not contain x"),
    ],
)
def test_solver_rejects_questions_it_cannot_solve(question: str, message: str) -> None:
    with pytest.raises(QuestionError, match=message):
        solve(question)


# --- verifier ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("85", Fraction(85)),
        ("085", Fraction(85)),
        ("-0", Fraction(0)),
        ("-3/2", Fraction(-3, 2)),
        ("6/4", Fraction(3, 2)),
        ("3/0", None),
        ("--3", None),
        ("3/-2", None),
        ("3/2/1", None),
        ("-", None),
        ("/2", None),
        ("", None),
        ("(3)", None),
        ("1+2", None),
        ("x", None),
    ],
)
def test_answer_parser_on_tricky_inputs(text: str, value: Fraction | None) -> None:
    assert parse_answer(encode(text)) == value


def _completions(question: str, completions: list[str], max_length: int = 64) -> Completions:
    """A batch of finished episodes of one question, built by hand."""
    prompt = encode(question)
    solution = solve_question(prompt)
    gold = solution.completion_tokens()
    count = len(completions)
    tokens = np.zeros((count, max_length), dtype=np.int64)
    lengths = np.zeros(count, dtype=np.int64)
    for row, text in enumerate(completions):
        written = np.concatenate([prompt, encode(text)])[:max_length]
        tokens[row, : len(written)] = written
        lengths[row] = len(written)
    gold_rows = np.zeros((count, max_length), dtype=np.int64)
    gold_rows[:, : len(gold)] = gold
    return Completions(
        tokens,
        np.full(count, len(prompt)),
        lengths,
        np.full(count, solution.answer.numerator),
        np.full(count, solution.answer.denominator),
        gold_rows,
        np.full(count, len(gold)),
        np.full(count, len(solution.steps)),
    )


def test_vectorised_answer_check_matches_the_python_parser() -> None:
    rng = np.random.default_rng(3)
    alphabet = np.array([*range(1, 11), encode("-")[0], encode("/")[0], encode("x")[0]])
    texts = []
    for _ in range(600):
        span = alphabet[rng.integers(0, len(alphabet), rng.integers(1, 7))]
        if rng.random() < 0.3:
            span = np.concatenate([encode("-"), span])
        texts.append(decode(span))
    texts += ["0" * 30 + "85", "85/" + "0" * 25 + "1", "1" * 25]  # past the vectorised window: Python fallback
    batch = _completions("37+48", [f"<think>37+48=85</think><answer>{text}<eos>" for text in texts])
    structure = batch.structure
    for row, text in enumerate(texts):
        expected = parse_answer(encode(text))
        assert structure.parsed[row] == (expected is not None), text
        assert structure.correct[row] == (expected == 85), text


def test_step_checks_on_tricky_steps() -> None:
    question = encode("37+48+12")

    def counted(thought: str) -> list[bool]:
        return [check.counted for check in check_steps(question, encode(thought))]

    assert counted("37+48=85;85+12=97") == [True, True]
    assert counted("37+48=85;48+37=85") == [True, False]  # same operation, other order: not new
    assert counted("37+48=86;37+48=85") == [False, True]  # a false step grounds nothing
    assert counted("37+100=137;85+12=97") == [False, False]  # 100 is not in the problem; 85 not derived yet
    assert counted("37+48=85;85-48=37;-85+85=0") == [True, True, True]  # results and their negations are known
    assert counted("85=85;37+48=85+0;37+48=85=85;;37+x=1") == [False] * 5  # not "expression = number"
    assert counted("12/0=0;(37)+(48)=85") == [False, True]
    assert counted("37/12=37/12;1+(37/12)=49/12") == [True, False]  # 1 is not in the problem
    assert counted("37/12=37/12;12+(37/12)=181/12;12+37/12=181/12") == [True, True, False]
    checks = check_steps(question, encode("(" * 400 + "37" + ")" * 400 + "+48=85"))
    assert len(checks) == 1  # deep nesting is a failed or passed step, never a crash


def test_process_share_caps_and_dilutes() -> None:
    question = encode("37+48+12")  # two gold steps
    assert process_share(question, encode("37+48=85;85+12=97"), 2) == 1.0
    assert process_share(question, encode("37+48=85"), 2) == 0.5
    assert process_share(question, encode("37+48=85;85+12=97;37+12=49"), 2) == pytest.approx(2 / 3)
    assert process_share(question, encode("37+48=85;37+48=85;37+48=85;37+48=85"), 2) == 0.25
    with pytest.raises(ValueError, match="gold_steps"):
        process_share(question, encode("1+1=2"), 0)


# --- reward terms ------------------------------------------------------------------------------------------------


def test_reward_terms_are_pure_functions_with_hand_computed_values() -> None:
    # prompt "37+48+12" is 8 tokens; with max_length 40 a completion has room for 32
    batch = _completions(
        "37+48+12",
        [
            "<think>37+48=85;85+12=97</think><answer>97<eos>",  # gold: 23 tokens
            "<think>37+48=85</think><answer>96<eos>",  # wrong answer, one of two steps: 14 tokens
            "<think>37+48=85;85+12=97</think><answer>97",  # no <eos> (as when cut): 22 tokens
        ],
        max_length=40,
    )
    expected = {
        "accuracy": [1.0, 0.0, 0.0],
        "format": [1.0, 1.0, 0.0],
        "process": [1.0, 0.5, 0.0],
        "length": [-23 / 32, -14 / 32, -22 / 32],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(REWARD_TERMS[name](batch), values, err_msg=name)
    assert list(REWARD_TERMS) == ["accuracy", "format", "process", "length"]


def test_weights_presets_and_overrides() -> None:
    assert resolve_weights() == {"accuracy": 1.0, "format": 0.1, "process": 0.0, "length": 0.0}
    assert resolve_weights("cot") == {"accuracy": 1.0, "format": 0.1, "process": 0.5, "length": 0.0}
    assert resolve_weights("cot", {"length": 0.2, "format": 0})["length"] == 0.2
    assert set(REWARD_PRESETS) == {"outcome", "cot"}
    with pytest.raises(ValueError, match="unknown reward 'best'.*accepted"):
        resolve_weights("best")
    with pytest.raises(ValueError, match="unknown reward term 'speed'"):
        resolve_weights("outcome", {"speed": 1.0})
    with pytest.raises(ValueError, match="finite"):
        resolve_weights("outcome", {"accuracy": float("nan")})
    with pytest.raises(ValueError, match="must be a number"):
        resolve_weights("outcome", {"accuracy": "1"})


def test_score_completion_full_marks_and_length_term() -> None:
    gold = solve("37+48")  # 14 tokens after a 5-token prompt
    total, terms = score_completion("37+48", gold)
    assert total == pytest.approx(OUTCOME_MAX)
    assert terms == pytest.approx({"accuracy": 1.0, "format": 1.0, "process": 1.0, "length": -14 / 14})
    total, terms = score_completion("37+48", gold, reward="cot", weights={"length": 0.5}, max_length=25)
    assert terms["length"] == pytest.approx(-14 / 20)
    assert total == pytest.approx(COT_MAX - 0.5 * 14 / 20)


# --- adversarial completions: each earns no more than its rule allows --------------------------------------------

# (question, completion, expected terms under reward="cot"); every case is also checked against the gold's reward
ADVERSARIAL = [
    ("37+48", "<think></think><answer>85<eos>", {"accuracy": 0, "format": 0, "process": 0}),  # empty thought
    ("37+48", "<answer>85<eos>", {"accuracy": 0, "format": 0, "process": 0}),  # answer without thought
    ("37+48", "85<eos>", {"accuracy": 0, "format": 0, "process": 0}),
    ("37+48", "<think>37+48=85</think><answer>85<answer>85<eos>", {"accuracy": 0, "format": 0, "process": 0}),
    ("37+48", "<think>37+48=85</think><answer>85</think><answer>85<eos>", {"accuracy": 0, "format": 0, "process": 0}),
    ("37+48", "<think>37+48=85</think><answer>84;85<eos>", {"accuracy": 0, "format": 0, "process": 0}),
    ("37+48", "<think>1+1=2;1+1=2;1+1=2;1+1=2</think><answer>85<eos>", {"accuracy": 1, "format": 1, "process": 0}),
    (
        "1+1+5",
        "<think>1+1=2;1+1=2;1+1=2;1+1=2;1+1=2</think><answer>7<eos>",
        {"accuracy": 1, "format": 1, "process": 0.2},
    ),
    ("37+48", "<think>37+48=85;100+0=100</think><answer>85<eos>", {"accuracy": 1, "format": 1, "process": 0.5}),
    ("37+48", "<think>37+48=85</think><answer><eos>", {"accuracy": 0, "format": 0, "process": 0}),
    ("37+48", "<think>37+48=85</think><answer>85/0<eos>", {"accuracy": 0, "format": 0, "process": 0}),
    ("37+48", "<think>37+48=85</think>85<eos>", {"accuracy": 0, "format": 0, "process": 0}),
    ("37+48", "<think><think>37+48=85</think><answer>85<eos>", {"accuracy": 0, "format": 0, "process": 0}),
    ("37+48", "<think>37+48=85</think><answer>85x<eos>", {"accuracy": 0, "format": 0, "process": 0}),
    ("37+48", "<think>37+48=85</think><answer>86<eos>", {"accuracy": 0, "format": 1, "process": 1}),
    ("37+48", "<think>37+48=85</think><answer>85<pad>", {"accuracy": 0, "format": 0, "process": 0}),  # PAD ends it
    # a junk thought still earns the outcome terms (that is what outcome reward means) but no process credit
    ("37+48", "<think>85</think><answer>85<eos>", {"accuracy": 1, "format": 1, "process": 0}),
    ("37+48", "<think>37+48=85</think><answer>170/2<eos>", {"accuracy": 1, "format": 1, "process": 1}),  # exact value
    # giant output: many true steps, only as many count as the gold chain has, diluted by all that were written
    (
        "37+48",
        "<think>" + ";".join(["37+48=85", "85-48=37", "85-37=48", "37+37=74"] * 8) + "</think><answer>85<eos>",
        {"accuracy": 1, "format": 1, "process": 1 / 32},
    ),
    # text after the first <eos> is never written
    ("37+48", "<think>37+48=85</think><answer>85<eos>85<eos>", {"accuracy": 1, "format": 1, "process": 1}),
]


@pytest.mark.parametrize(("question", "completion", "expected"), ADVERSARIAL)
def test_adversarial_completion_earns_only_what_its_rule_allows(question: str, completion: str, expected: dict) -> None:
    total, terms = score_completion(question, completion, reward="cot")
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value), name
    gold_total, _ = score_completion(question, solve(question), reward="cot")
    assert gold_total == pytest.approx(COT_MAX)
    assert total <= gold_total + 1e-12
    if not expected["format"]:
        assert total == 0.0


def test_output_at_the_length_cap_earns_nothing() -> None:
    env = gym.make(ENV_ID, reward="cot", max_length=32)
    env.reset(seed=1)
    prompt_length, gold = gold_completion(env)
    # the gold thought, then digits forever: the buffer fills without <eos>
    tokens = np.concatenate([gold[:-1], np.full(64, encode("7")[0])])
    reward, terminated, truncated, info = _run_episode(env, tokens)
    assert terminated and not truncated  # terminal: no critic may bootstrap a completion that cannot continue
    assert reward == 0.0 and not info["is_success"]
    assert info["reward_terms"] == {"accuracy": 0.0, "format": 0.0, "process": 0.0, "length": -1.0}
    assert env.unwrapped.core.length[0] == 32 and prompt_length < 32


def test_random_token_sequences_never_earn_reward() -> None:
    env = gym.make_vec(ENV_ID, num_envs=256, reward="cot", autoreset_mode=AutoresetMode.SAME_STEP)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    finished = 0
    for _ in range(120):
        _, reward, terminated, truncated, info = env.step(rng.integers(0, VOCAB_SIZE, 256))
        done = terminated | truncated
        finished += int(done.sum())
        assert np.all(reward == 0.0) and not info["is_success"].any()
        assert np.all(info["reward_terms"]["length"][done] < 0) and np.all(info["reward_terms"]["length"][~done] == 0)
    assert finished > 1000


# --- JSONL problem files -----------------------------------------------------------------------------------------


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_problem_file_loads_and_drives_the_env(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            json.dumps({"question": "37 + 48", "answer": 85}),
            "",
            json.dumps({"question": "(7+8)/2", "answer": "15/2"}),
            json.dumps({"question": "3*x+5=20", "answer": "5", "source": "extra keys are ignored"}),
        ],
    )
    problems = load_problems(path)
    assert [p.question for p in problems] == ["37+48", "(7+8)/2", "3*x+5=20"]
    assert [p.answer for p in problems] == [85, Fraction(15, 2), 5]
    env = gym.make(ENV_ID, problem_file=str(path), reward="cot")
    seen = set()
    for seed in range(30):
        observation, _ = env.reset(seed=seed)
        question = decode(observation)
        seen.add(question)
        assert decode(env.reset(seed=seed)[0]) == question  # same seed, same problem
        _, gold = gold_completion(env)
        reward, terminated, _, info = _run_episode(env, gold)
        assert terminated and info["is_success"] and reward == pytest.approx(COT_MAX)
    assert seen == {p.question for p in problems}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"question": "1+2", "answer": 3}', "{not json"], r"problems.jsonl:2: not valid JSON"),
        (['{"question": "1+2"}'], r":1: expected an object"),
        (["[1, 2]"], r":1: expected an object"),
        (['{"question": 12, "answer": 3}'], r":1: question must be a string"),
        (['{"question": "one+two", "answer": 3}'], r":1: question 'one\+two': cannot encode 'o'"),
        (['{"question": "1+2", "answer": 4}'], r":1: answer 4 does not match the value of '1\+2', which is 3"),
        (['{"question": "1+2", "answer": 3.0}'], r":1: answer must be an integer or a string"),
        (['{"question": "1+2", "answer": "three"}'], r":1: answer 'three' is not a number"),
        (['{"question": "7", "answer": 7}'], r":1: question '7' cannot be solved: .*at least one operation"),
        (['{"question": "x+x=2", "answer": 1}'], r":1: .*exactly once"),
        ([""], r"holds no problems"),
    ],
)
def test_malformed_problem_files_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _write(tmp_path, lines)
    with pytest.raises(ProblemFileError, match=message):
        load_problems(path)


def test_problem_file_errors_for_missing_file_length_and_level(tmp_path: Path) -> None:
    with pytest.raises(ProblemFileError, match="does not exist"):
        load_problems(tmp_path / "absent.jsonl")
    path = _write(tmp_path, [json.dumps({"question": "+".join(["99"] * 12), "answer": 99 * 12})])
    with pytest.raises(ProblemFileError, match=r":1: .*do not fit max_length=32; pass max_length>="):
        gym.make(ENV_ID, problem_file=str(path), max_length=32)
    with pytest.raises(ValueError, match="either level= or problem_file="):
        gym.make(ENV_ID, problem_file=str(path), level=2)


# --- the environment ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", sorted(LEVELS))
@pytest.mark.parametrize("reward", ["outcome", "cot"])
def test_gold_completion_scores_full_marks_through_the_env(level: int, reward: str) -> None:
    env = gym.make(ENV_ID, level=level, reward=reward, render_mode="ansi")
    for seed in range(3):
        observation, info = env.reset(seed=seed)
        prompt_length, gold = gold_completion(env)
        assert prompt_length == info["prompt_length"] == np.count_nonzero(observation)
        np.testing.assert_array_equal(gold, gold_completion_tokens(env.unwrapped.core.problem(0)))
        reward_value, terminated, truncated, info = _run_episode(env, gold)
        assert terminated and not truncated and info["is_success"]
        assert info["reward_terms"]["accuracy"] == 1.0 and info["reward_terms"]["process"] == 1.0
        assert reward_value == pytest.approx(OUTCOME_MAX if reward == "outcome" else COT_MAX)
        assert env.render() == env.unwrapped.core.problem(0).question + decode(gold)


def test_vector_env_scores_every_gold_completion_and_pays_only_at_the_end() -> None:
    env = gym.make_vec(ENV_ID, num_envs=16, level=4, reward="cot", autoreset_mode=AutoresetMode.DISABLED)
    _, info = env.reset(seed=100)
    prompt_length, gold, gold_length = gold_completions(env)
    np.testing.assert_array_equal(prompt_length, info["prompt_length"])
    rewards = np.zeros(16)
    ended = np.zeros(16, dtype=bool)
    for t in range(int(gold_length.max())):
        actions = gold[np.arange(16), np.minimum(t, gold_length - 1)]
        observation, reward, terminated, truncated, info = env.step(actions)
        assert not truncated.any()
        newly = terminated & ~ended
        assert np.all(reward[~newly] == 0.0)
        for name in REWARD_TERMS:
            assert np.all(info["reward_terms"][name][~newly] == 0.0)
        rewards += reward
        ended |= terminated
        # the policy's view: the next position is the count of non-PAD tokens
        np.testing.assert_array_equal(
            np.count_nonzero(observation, axis=1), prompt_length + np.minimum(t + 1, gold_length)
        )
    assert ended.all() and np.allclose(rewards, COT_MAX)


def test_gymnasium_check_env_passes() -> None:
    check_env(gym.make(ENV_ID).unwrapped, skip_render_check=False)
    check_env(gym.make(ENV_ID, level=5, reward="cot", render_mode="ansi").unwrapped, skip_render_check=False)


def test_spaces_and_default_lengths() -> None:
    for level in (1, 6):
        env = gym.make(ENV_ID, level=level)
        assert env.action_space == gym.spaces.Discrete(VOCAB_SIZE)
        space = env.observation_space
        assert space.dtype == np.int64 and space.shape == (DEFAULT_MAX_LENGTH[level],)
        assert space.low.min() == 0 and space.high.max() == VOCAB_SIZE - 1
        assert space.contains(env.reset(seed=0)[0])
    assert gym.make(ENV_ID, max_length=100).observation_space.shape == (100,)
    assert MathReasoningEnv.__doc__ and "## Version History" in MathReasoningEnv.__doc__


@pytest.mark.parametrize("action", [VOCAB_SIZE, -1, 1.5, np.array([1, 2])])
def test_bad_actions_raise(action: object) -> None:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError):
        env.step(action)


def test_bad_batches_and_stepping_a_finished_episode_raise() -> None:
    vector = gym.make_vec(ENV_ID, num_envs=4)
    vector.reset(seed=0)
    with pytest.raises(InvalidActionError, match="shape"):
        vector.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(InvalidActionError, match=r"accepted values are 0\.\.23"):
        vector.step(np.array([1, 2, 3, 99]))
    env = MathReasoningEnv()
    env.reset(seed=0)
    env.step(EOS)
    with pytest.raises(gym.error.ResetNeeded, match="call reset"):
        env.step(THINK)
    env.reset(seed=0)
    env.step(THINK)
    _, reward, terminated, truncated, info = env.step(PAD)  # PAD may not appear inside a sequence: it ends it
    assert terminated and not truncated and reward == 0.0 and not info["is_success"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 0}, r"unknown level 0; accepted levels: \[1, 2, 3, 4, 5, 6\]"),
        ({"level": "2"}, "unknown level '2'"),
        ({"reward": "dense"}, "unknown reward 'dense'"),
        ({"weights": {"accuracy": 1, "style": 1}}, "unknown reward term 'style'"),
        ({"max_length": 4}, "max_length must be an integer >= 8"),
        ({"max_length": 40, "level": 6}, r"max_length=40 is too small for level 6.*pass max_length>="),
        ({"render_mode": "rgb_array"}, "render_mode 'rgb_array' is not supported"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MathReasoningEnv(**kwargs)


def test_gold_completion_helper_rejects_bad_input() -> None:
    env = gym.make_vec(ENV_ID, num_envs=2)
    env.reset(seed=0)
    with pytest.raises(IndexError, match=r"accepted 0\.\.1"):
        gold_completion(env, 2)
    with pytest.raises(TypeError, match="not a MathReasoning environment"):
        gold_completion(gym.make("CartPole-v1"))


def test_generated_problems_always_fit_and_carry_separators() -> None:
    source = GeneratedProblems(6, max_length=96)  # tighter than the default: long problems are redrawn
    for problem in generate_problems(6, range(200), max_length=96):
        assert len(problem.question) + len(gold_completion_tokens(problem)) <= 96
    assert source.max_length == 96
    gold = gold_completion_tokens("1+2+3+4")
    assert list(gold).count(SEP) == 2 and gold[0] == THINK and THINK_END in gold and ANSWER in gold
