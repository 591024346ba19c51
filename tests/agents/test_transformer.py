"""The token transformer policy: KV-cache decoding equals the full forward, sampling (greedy, temperature, top-p),
whole-episode scoring, value and MoE heads, spec integration and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents import ActorCritic, PolicySpec, TransformerConfig, TransformerPolicy, make_policy, obs_to_tensor
from agents import transformer as transformer_module
from agents.transformer import TokenTransformer, sampling_log_probs, token_lengths

VOCAB = 12
LENGTH = 16
OBSERVATION_SPACE = spaces.Box(0, VOCAB - 1, (LENGTH,), np.int64)
ACTION_SPACE = spaces.Discrete(VOCAB)
PROMPT_LENGTHS = (3, 5, 1, 7, 2)


def tiny(**overrides) -> TransformerPolicy:
    values = dict(architecture="transformer", num_layers=2, num_heads=2, model_dim=16)
    values.update(overrides)
    torch.manual_seed(0)
    policy = make_policy(PolicySpec(**values), OBSERVATION_SPACE, ACTION_SPACE)
    # larger logits than the 0.02 init, so the distributions are far from uniform and top-p has something to cut
    with torch.no_grad():
        policy.policy_head.weight.mul_(10.0)
    return policy


def ragged_prompts(lengths=PROMPT_LENGTHS, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), LENGTH, dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens[row, :length] = torch.randint(1, VOCAB, (length,), generator=generator)
    return tokens


def roll_out(
    policy: TransformerPolicy,
    prompts: torch.Tensor,
    steps: int,
    deterministic: bool = False,
    stop_row_at: dict[int, int] | None = None,
):
    """Decode like rlopt.rollout.collect_groups: rows stop on PAD, on a full buffer, or at ``stop_row_at``.

    Returns (actions (N, T), log_probs (N, T), mask (N, T), per-step checks [(observation, actions, log_probs)]).
    """
    count = prompts.shape[0]
    observation = prompts.clone()
    state = policy.initial_state(count, "cpu")
    active = torch.ones(count, dtype=torch.bool)
    actions = torch.zeros(count, steps, dtype=torch.long)
    log_probs = torch.zeros(count, steps)
    mask = torch.zeros(count, steps, dtype=torch.bool)
    checks = []
    for step in range(steps):
        rows = torch.nonzero(active).squeeze(1)
        if not len(rows):
            break
        with torch.no_grad():
            chosen, chosen_log_probs, state = policy.act_with_state(observation[rows], state, rows, deterministic)
        checks.append((observation[rows].clone(), chosen, chosen_log_probs))
        actions[rows, step], log_probs[rows, step], mask[rows, step] = chosen, chosen_log_probs, True
        lengths = token_lengths(observation[rows])
        for row, length, token in zip(rows.tolist(), lengths.tolist(), chosen.tolist(), strict=True):
            observation[row, length] = token
            if token == 0 or length + 1 >= LENGTH or (stop_row_at or {}).get(row) == step:
                active[row] = False
    return actions, log_probs, mask, checks


# --- KV cache == full forward ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_experts", [0, 3], ids=["dense", "moe"])
def test_reading_one_column_per_row_equals_the_full_forward(num_experts: int) -> None:
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=VOCAB, context_length=LENGTH, num_layers=2, num_heads=2, model_dim=16, num_experts=num_experts
    )
    network = TokenTransformer(config)
    tokens = ragged_prompts()
    read = token_lengths(tokens) - 1
    width = int(read.max()) + 1
    tokens = tokens[:, :width]
    weights = torch.randn(len(tokens), config.model_dim)

    def run(pruned: bool):
        network.zero_grad()
        out = network(tokens, token_mask=tokens != 0, return_cache=True, read=read if pruned else None)
        hidden = out.hidden if pruned else out.hidden[torch.arange(len(tokens)), read]
        ((hidden * weights).sum() + sum(key.square().sum() for key in out.keys) + out.aux_loss).backward()
        grads = {name: parameter.grad.clone() for name, parameter in network.named_parameters()}
        return hidden.detach(), [key.detach() for key in out.keys + out.values], grads

    pruned, full = run(True), run(False)
    assert pruned[0].shape == (len(tokens), config.model_dim)
    torch.testing.assert_close(pruned[0], full[0], atol=1e-5, rtol=0)
    for mine, theirs in zip(pruned[1], full[1], strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
    for name, gradient in full[2].items():
        torch.testing.assert_close(pruned[2][name], gradient, atol=1e-5, rtol=1e-4, msg=name)


def test_kv_cache_grows_by_doubling_and_keeps_its_entries(monkeypatch) -> None:
    monkeypatch.setattr(transformer_module, "CACHE_START_POSITIONS", 3)
    network = TokenTransformer(TransformerConfig(vocab_size=VOCAB, context_length=10, num_layers=2, model_dim=8))
    cache = network.empty_cache(4, "cpu")
    assert cache.capacity == 3 and cache.entries[0].shape == (4, 3, 2, 4, 2)
    for layer, entries in enumerate(cache.entries):
        entries.fill_(layer + 1.0)
    layers = cache.entries
    cache.reserve(3, 10)
    assert cache.capacity == 3 and cache.entries is layers
    cache.reserve(4, 10)  # doubles
    assert cache.capacity == 6 and cache.entries is layers
    cache.reserve(9, 10)  # doubling would pass the context length: capped
    assert cache.capacity == 10
    for layer, entries in enumerate(cache.entries):
        assert (entries[:, :3] == layer + 1.0).all() and (entries[:, 3:] == 0).all()
    with pytest.raises(ValueError, match="exceeds the context length 10"):
        cache.reserve(11, 10)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"temperature": 0.7, "top_p": 0.9}, {"num_experts": 3, "top_k": 2}, {"num_layers": 1, "num_heads": 4}],
    ids=["plain", "temperature-top-p", "moe", "one-layer"],
)
@pytest.mark.parametrize("attention", ["broadcast", "sdpa"])
@pytest.mark.parametrize("cache_start", [LENGTH, 3], ids=["cache-full-size", "cache-grows"])
def test_incremental_decoding_matches_full_forward_for_ragged_prompts(
    overrides: dict, attention: str, cache_start: int, monkeypatch
) -> None:
    # one-token attention: plain broadcasts over a short past, SDPA over a long one; both checked at every width
    monkeypatch.setattr(transformer_module, "DECODE_ELEMENTWISE_MAX_WIDTH", 10**6 if attention == "broadcast" else 0)
    # a cache that starts with room for 3 positions grows in the prefill (prompts of up to 7) and while decoding
    monkeypatch.setattr(transformer_module, "CACHE_START_POSITIONS", cache_start)
    policy = tiny(**overrides)
    prompts = ragged_prompts()
    torch.manual_seed(1)
    actions, log_probs, mask, checks = roll_out(policy, prompts, steps=10, stop_row_at={1: 3})
    assert mask[1].sum() <= 4 and mask[:, 4:].any(), "row 1 leaves early, others keep decoding (a non-contiguous set)"
    with torch.no_grad():
        for observation, chosen, chosen_log_probs in checks:
            full = policy.evaluate_actions(observation, chosen)["log_prob"]
            torch.testing.assert_close(chosen_log_probs, full, atol=1e-5, rtol=0)
        scored = policy.evaluate_episodes(prompts, actions, mask)
    torch.testing.assert_close(scored["log_prob"], torch.where(mask, log_probs, 0.0), atol=1e-5, rtol=0)


def test_a_row_whose_observation_does_not_continue_its_cache_is_prefilled_again() -> None:
    policy = tiny()
    prompts = ragged_prompts()
    state = policy.initial_state(len(prompts), "cpu")
    rows = torch.arange(len(prompts))
    with torch.no_grad():
        first, _, state = policy.act_with_state(prompts, state, rows, deterministic=True)
        observation = prompts.clone()
        observation[rows, token_lengths(prompts)] = first.clamp(min=1)
        observation[2] = ragged_prompts((6,), seed=5)[0]  # row 2 restarts on another prompt (mixed call)
        chosen, log_probs, state = policy.act_with_state(observation, state, rows, deterministic=True)
        logits = policy.logits(observation)
    torch.testing.assert_close(chosen, logits.argmax(dim=-1))
    torch.testing.assert_close(
        log_probs, logits.log_softmax(-1).gather(1, chosen[:, None]).squeeze(1), atol=1e-5, rtol=0
    )
    assert state.length.tolist() == token_lengths(observation).tolist()


def test_evaluate_episodes_matches_per_step_evaluate_actions() -> None:
    policy = tiny(temperature=1.3, top_p=0.8)
    prompts = ragged_prompts()
    generator = torch.Generator().manual_seed(2)
    steps = 6
    actions = torch.randint(1, VOCAB, (len(prompts), steps), generator=generator)
    generated = torch.tensor([6, 2, 4, 1, 5])
    mask = torch.arange(steps) < generated[:, None]
    scored = policy.evaluate_episodes(prompts, actions, mask)
    for row in range(len(prompts)):
        observation = prompts[row].clone()
        start = int(token_lengths(prompts[row : row + 1])[0])
        for step in range(int(generated[row])):
            single = policy.evaluate_actions(observation[None], actions[row, step : step + 1])
            torch.testing.assert_close(scored["log_prob"][row, step], single["log_prob"][0], atol=1e-5, rtol=0)
            torch.testing.assert_close(scored["entropy"][row, step], single["entropy"][0], atol=1e-5, rtol=0)
            observation[start + step] = actions[row, step]
    assert (scored["log_prob"][~mask] == 0).all() and (scored["entropy"][~mask] == 0).all()
    scored["log_prob"].sum().backward()
    assert all(parameter.grad is not None for parameter in policy.parameters())


# --- shared prompts: GRPO groups run their prompt once ------------------------------------------------------------


def grouped_episodes(group_size: int = 4, steps: int = 6, seed: int = 2):
    """Shuffled groups of episodes over the ragged prompts: (prompts (M, L), actions (M, T), mask (M, T)).

    Generated lengths cover 1 (only the prompt's last hidden state is read) up to ``steps`` (a row fills the grid).
    """
    generator = torch.Generator().manual_seed(seed)
    prompts = ragged_prompts().repeat_interleave(group_size, dim=0)
    count = prompts.shape[0]
    order = torch.randperm(count, generator=generator)  # GRPO's minibatches shuffle episodes: no consecutive blocks
    actions = torch.randint(1, VOCAB, (count, steps), generator=generator)
    generated = torch.randint(1, steps + 1, (count,), generator=generator)
    generated[:2] = torch.tensor([1, steps])
    mask = torch.arange(steps) < generated[:, None]
    return prompts[order], actions, mask


def score_and_grad(policy: TransformerPolicy, prompts, actions, mask):
    scored = policy.evaluate_episodes(prompts, actions, mask)
    policy.zero_grad()
    (scored["log_prob"].sum() + 0.5 * scored["entropy"].sum()).backward()
    gradients = {name: parameter.grad.clone() for name, parameter in policy.named_parameters()}
    return scored["log_prob"].detach(), scored["entropy"].detach(), gradients


@pytest.mark.parametrize(
    ("overrides", "layout"),
    [
        ({}, "group"),
        ({"temperature": 1.3, "top_p": 0.8}, "group"),
        ({}, "pair"),
        ({}, "episode"),
        ({}, "uneven"),
    ],
    ids=["plain", "temperature-top-p", "rows-of-two-episodes", "row-per-episode", "uneven-groups"],
)
@pytest.mark.parametrize("attention", ["matmul", "sdpa"])
def test_shared_prompt_scoring_equals_the_plain_forward(
    overrides: dict, layout: str, attention: str, monkeypatch
) -> None:
    # the episodes' attention after their prompt: batched matmuls (the CPU default) or SDPA (elsewhere)
    monkeypatch.setattr(transformer_module, "EXTEND_MATMUL_ON_CPU", attention == "matmul")
    policy = tiny(**overrides)
    prompts, actions, mask = grouped_episodes()
    if layout == "pair":  # rows of 10 slots: two episodes of 5 per row, each prompt read by two rows
        monkeypatch.setattr(transformer_module, "GROUP_ROW_MAX_SLOTS", 10)
    if layout == "episode":  # no two episodes fit a row
        monkeypatch.setattr(transformer_module, "GROUP_ROW_MAX_SLOTS", 0)
    if layout == "uneven":  # a group one episode short (and prompts still shared)
        prompts, actions, mask = prompts[1:], actions[1:], mask[1:]
    calls, sdpa_calls, extend_sdpa_calls = [], [], []
    extend, sdpa = policy.transformer.extend, transformer_module.F.scaled_dot_product_attention

    def spy(tokens, positions, attention_layout, past_keys, past_values):
        calls.append((tokens.shape, attention_layout.shape, past_keys[0].shape[0]))
        before = len(sdpa_calls)
        result = extend(tokens, positions, attention_layout, past_keys, past_values)
        extend_sdpa_calls.append(len(sdpa_calls) - before)
        return result

    def counting_sdpa(*args, **kwargs):
        sdpa_calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(policy.transformer, "extend", spy)
    monkeypatch.setattr(transformer_module.F, "scaled_dot_product_attention", counting_sdpa)
    shared = score_and_grad(policy, prompts, actions, mask)
    # the path asked for is the one taken: no SDPA in the episodes' layers on the matmul path, one per layer else
    assert extend_sdpa_calls == [0 if attention == "matmul" else policy.config.num_layers]
    # packed: an episode of g generated tokens runs g - 1 of them after its shared prompt
    packed = (int((mask.sum(dim=1) - 1).sum()),)
    groups, count, width = len(PROMPT_LENGTHS), len(prompts), actions.shape[1] - 1
    if layout == "group":  # one row per prompt, over the prompt's own keys (not a copy per episode)
        assert calls == [(packed, (groups, count // groups * width), groups)]
    elif layout == "pair":
        assert calls == [(packed, (count // 2, 2 * width), count // 2)]
    else:
        assert calls == [(packed, (count, width), count)], "each episode in its own row"
    monkeypatch.setattr(transformer_module, "_shared_prompts", lambda prompts, lengths: None)
    plain = score_and_grad(policy, prompts, actions, mask)
    assert len(calls) == 1
    torch.testing.assert_close(shared[0], plain[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(shared[1], plain[1], atol=1e-5, rtol=0)
    assert (shared[0][~mask] == 0).all() and (shared[1][~mask] == 0).all()
    for name, gradient in plain[2].items():
        assert gradient.abs().sum() > 0 and torch.isfinite(shared[2][name]).all(), name
        torch.testing.assert_close(shared[2][name], gradient, atol=1e-4, rtol=1e-4, msg=name)


def test_prompt_layouts_keep_each_episode_to_its_prompt_and_its_own_tokens(monkeypatch) -> None:
    # two prompts (lengths 2 and 3) with two episodes each, shuffled; episodes of 2, 1, 2 and 0 scored tokens
    unique = torch.tensor([[5, 6, 0], [7, 8, 9]])
    inverse = torch.tensor([1, 0, 0, 1])
    width = 2
    index = torch.tensor([0, 1, 2, 4, 5])  # slots m * 2 + t of the (4, 2) grid
    layout, past = transformer_module._prompt_layout(index, inverse, unique, width)
    assert layout.shape == (2, 4) and past == 1  # a row per prompt, over its keys as they are
    # by prompt: row 0 holds episodes 1, 2 (blocks 0, 1), row 1 holds episodes 0, 3
    assert layout.index.tolist() == [4, 5, 0, 2, 3]
    visible = layout.visible[:, 0].int()
    assert visible.shape == (2, 4, 3 + 4)
    assert visible[0, 0].tolist() == [1, 1, 0, 1, 0, 0, 0]  # prompt 0's two tokens, then itself
    assert visible[0, 3].tolist() == [1, 1, 0, 0, 0, 1, 1]  # second block's second slot: its block only
    assert visible[1, 1].tolist() == [1, 1, 1, 1, 1, 0, 0]

    monkeypatch.setattr(transformer_module, "GROUP_ROW_MAX_SLOTS", 3)  # two episodes of 2 slots: too wide
    layout, past = transformer_module._prompt_layout(index, inverse, unique, width)
    assert layout.shape == (4, 2) and past == 2  # a row per episode, ordered by prompt; each prompt read twice
    assert layout.index.tolist() == [4, 5, 0, 2, 3]
    assert layout.visible[:, 0, 0].int().tolist() == [[1, 1, 0, 1, 0]] * 2 + [[1, 1, 1, 1, 0]] * 2
    keys = torch.arange(2.0)[:, None]
    assert transformer_module._past_rows(keys, past).squeeze(1).tolist() == [0, 0, 1, 1]

    uneven = torch.tensor([1, 0, 0, 0])
    layout, past = transformer_module._prompt_layout(index, uneven, unique, width)
    assert layout.shape == (4, 2) and torch.equal(past, uneven)  # in its own order, over gathered copies
    assert torch.equal(layout.index, index)
    assert layout.visible[:, 0, 0].int().tolist() == [[1, 1, 1, 1, 0]] + [[1, 1, 0, 1, 0]] * 3
    assert transformer_module._past_rows(keys, past).squeeze(1).tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize(
    ("group_size", "width", "per_row"),
    [(8, 7, 4), (8, 3, 8), (8, 4, 8), (8, 15, 2), (8, 17, 1), (6, 5, 6), (6, 6, 3), (7, 5, 1), (1, 40, 1)],
)
def test_episodes_per_row_is_the_largest_divisor_that_fits(group_size: int, width: int, per_row: int) -> None:
    assert transformer_module.GROUP_ROW_MAX_SLOTS == 32
    assert transformer_module._episodes_per_row(group_size, width) == per_row


@pytest.mark.parametrize("collide", [False, True], ids=["hash", "collision-fallback"])
def test_distinct_rows_group_equal_rows_exactly(collide: bool, monkeypatch) -> None:
    generator = torch.Generator().manual_seed(3)
    rows = torch.randint(0, 3, (200, 4), generator=generator)  # 81 possible rows: many repeats
    if collide:  # every row hashes alike: the exact check must catch it
        monkeypatch.setattr(transformer_module, "_row_hash_weights", lambda width, device: torch.zeros(width).long())
    unique, inverse = transformer_module._distinct_rows(rows)
    assert torch.equal(unique[inverse], rows)
    expected = torch.unique(rows, dim=0)
    assert unique.shape == expected.shape
    assert torch.equal(torch.unique(unique, dim=0), expected)  # the same rows, each once


def test_shared_prompts_are_detected_from_the_data() -> None:
    prompts, actions, mask = grouped_episodes()
    lengths = token_lengths(prompts)
    unique, inverse = transformer_module._shared_prompts(prompts, lengths)
    assert unique.shape == (len(PROMPT_LENGTHS), max(PROMPT_LENGTHS))
    torch.testing.assert_close(unique[inverse], prompts[:, : max(PROMPT_LENGTHS)])
    assert transformer_module._shared_prompts(ragged_prompts(), token_lengths(ragged_prompts())) is None
    # mostly distinct prompts (SFT batches) keep the plain path: sharing would not pay for itself
    mixed = torch.cat([ragged_prompts(), ragged_prompts()[:1]])
    assert transformer_module._shared_prompts(mixed, token_lengths(mixed)) is None


def test_moe_policies_score_shared_prompts_with_the_plain_forward() -> None:
    policy = tiny(num_experts=3, top_k=2)
    prompts, actions, mask = grouped_episodes()
    scored = policy.evaluate_episodes(prompts, actions, mask)  # routing statistics count every episode's prompt
    observation = prompts[:1].clone()
    start = int(token_lengths(observation)[0])
    for step in range(int(mask[0].sum())):
        single = policy.evaluate_actions(observation, actions[0, step : step + 1])
        torch.testing.assert_close(scored["log_prob"][0, step], single["log_prob"][0], atol=1e-5, rtol=0)
        observation[0, start + step] = actions[0, step]
    with pytest.raises(ValueError, match="dense blocks only"):
        policy.transformer.extend(None, None, None, [], [])


@pytest.mark.parametrize("overrides", [{}, {"num_experts": 3, "top_k": 2}], ids=["dense", "moe"])
def test_grouped_prefill_equals_per_row_prefill(overrides: dict, monkeypatch) -> None:
    policy = tiny(**overrides)
    prompts, _, _ = grouped_episodes(group_size=3)
    rows = torch.arange(prompts.shape[0])
    widths = []
    forward = policy.transformer.forward
    monkeypatch.setattr(
        policy.transformer, "forward", lambda tokens, **kw: widths.append(len(tokens)) or forward(tokens, **kw)
    )
    with torch.no_grad():
        grouped = policy.act_with_state(prompts, policy.initial_state(len(rows), "cpu"), rows, deterministic=True)
        assert widths == [len(PROMPT_LENGTHS)], "each distinct prompt is prefilled once"
        monkeypatch.setattr(transformer_module, "_shared_prompts", lambda tokens, lengths: None)
        per_row = policy.act_with_state(prompts, policy.initial_state(len(rows), "cpu"), rows, deterministic=True)
    assert widths[1] == len(rows)
    torch.testing.assert_close(grouped[0], per_row[0])
    torch.testing.assert_close(grouped[1], per_row[1], atol=1e-5, rtol=0)
    for mine, theirs in zip(grouped[2].keys + grouped[2].values, per_row[2].keys + per_row[2].values, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    assert torch.equal(grouped[2].length, per_row[2].length)


# --- sampling -----------------------------------------------------------------------------------------------------


def test_greedy_is_the_argmax_of_the_logits() -> None:
    policy = tiny(temperature=2.0, top_p=0.5)
    prompts = ragged_prompts()
    with torch.no_grad():
        logits = policy.logits(prompts)
        actions, log_probs = policy.act(prompts, deterministic=True)
        cached, cached_log_probs, _ = policy.act_with_state(
            prompts, policy.initial_state(5, "cpu"), torch.arange(5), deterministic=True
        )
    torch.testing.assert_close(actions, logits.argmax(dim=-1))
    torch.testing.assert_close(cached, actions)
    expected = sampling_log_probs(logits, 2.0, 0.5).gather(1, actions[:, None]).squeeze(1)
    torch.testing.assert_close(log_probs, expected)
    torch.testing.assert_close(cached_log_probs, expected, atol=1e-5, rtol=0)


def test_sampling_log_probs_by_hand() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # the two most likely tokens hold 0.8 >= 0.75: the nucleus is {0, 1}, renormalised
    nucleus = sampling_log_probs(logits, top_p=0.75)
    torch.testing.assert_close(nucleus[0, :2], torch.tensor([0.5 / 0.8, 0.3 / 0.8]).log())
    assert torch.isinf(nucleus[0, 2:]).all()
    kept = sampling_log_probs(logits, top_p=0.75, keep=torch.tensor([3]))  # an evaluated action stays in
    torch.testing.assert_close(kept[0, [0, 1, 3]].exp(), torch.tensor([0.5, 0.3, 0.05]) / 0.85)
    assert torch.isinf(kept[0, 2])
    torch.testing.assert_close(sampling_log_probs(logits, top_p=1.0), logits.log_softmax(-1))
    torch.testing.assert_close(sampling_log_probs(logits, temperature=0.5), (logits / 0.5).log_softmax(-1))
    assert sampling_log_probs(logits, top_p=1e-6).isfinite().sum() == 1, "the most likely token always stays"


def test_top_p_restricts_the_support_of_samples() -> None:
    policy = tiny(top_p=0.6)
    prompts = ragged_prompts()[:1].repeat(4000, 1)
    with torch.no_grad():
        probs = policy.logits(prompts[:1]).softmax(-1)[0]
        torch.manual_seed(3)
        actions, log_probs = policy.act(prompts)
    order = probs.argsort(descending=True)
    cumulative = probs[order].cumsum(0)
    nucleus = set(order[: int((cumulative < 0.6).sum()) + 1].tolist())
    assert 1 < len(nucleus) < VOCAB, "the test needs a non-trivial nucleus"
    assert set(actions.tolist()) == nucleus
    renormalised = probs / probs[list(nucleus)].sum()
    torch.testing.assert_close(log_probs, renormalised[actions].log(), atol=1e-5, rtol=0)


def test_samples_follow_the_tempered_distribution() -> None:
    policy = tiny(temperature=1.5)
    prompts = ragged_prompts()[3:4].repeat(20000, 1)
    with torch.no_grad():
        probs = sampling_log_probs(policy.logits(prompts[:1]), temperature=1.5).exp()[0]
        torch.manual_seed(5)
        actions, _ = policy.act(prompts)
    frequencies = torch.bincount(actions, minlength=VOCAB).float() / len(actions)
    # a binomial frequency of 20000 draws has std <= 0.0036; 5 std of slack
    torch.testing.assert_close(frequencies, probs, atol=0.018, rtol=0)


def test_temperature_changes_sampling_and_log_probs() -> None:
    hot, plain = tiny(temperature=3.0), tiny()
    prompts = ragged_prompts()
    with torch.no_grad():
        logits = plain.logits(prompts)
        hot_result = hot.evaluate_actions(prompts, logits.argmax(-1))
        plain_result = plain.evaluate_actions(prompts, logits.argmax(-1))
    torch.testing.assert_close(hot_result["log_prob"], (logits / 3.0).log_softmax(-1).max(-1).values)
    assert (hot_result["entropy"] > plain_result["entropy"]).all()


# --- heads, MoE, spec ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False])
def test_value_head_on_the_transformer(shared: bool) -> None:
    policy = tiny(value_head=True, shared_trunk=shared)
    prompts = ragged_prompts()
    result = policy.evaluate_actions(prompts, torch.ones(5, dtype=torch.long))
    assert result["value"].shape == (5,) and policy.value(prompts).shape == (5,)
    torch.testing.assert_close(result["value"], policy.value(prompts))
    names = {name.split(".")[0] for name, _ in policy.named_parameters()}
    assert names == ({"transformer", "policy_head", "value_head"} | (set() if shared else {"critic"}))
    actor = tiny()
    missing, unexpected = policy.load_state_dict(actor.state_dict(), strict=False)
    assert not unexpected and all(name.startswith(("value_head", "critic")) for name in missing)
    with pytest.raises(RuntimeError, match="no value head"):
        actor.value(prompts)


def value_episodes(grouped: bool):
    """Episodes for the per-position value tests: ragged prompts, one of them filled to the last column (a length
    cut, whose final observation must still be valued), or shuffled GRPO-style groups (the shared-prompt path)."""
    if grouped:
        return grouped_episodes(group_size=3)
    prompts = ragged_prompts()
    steps = LENGTH - max(PROMPT_LENGTHS)
    actions = torch.randint(1, VOCAB, (len(prompts), steps), generator=torch.Generator().manual_seed(3))
    generated = torch.tensor([4, 2, 6, steps, 1])  # row 3 (prompt of 7) ends with a full buffer
    return prompts, actions, torch.arange(steps) < generated[:, None]


@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "shared-prompts"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-trunk", "separate-critic"])
def test_episode_values_equal_the_value_of_every_prefix(shared: bool, grouped: bool, monkeypatch) -> None:
    policy = tiny(value_head=True, shared_trunk=shared, temperature=1.3, top_p=0.8)
    with torch.no_grad():
        policy.value_head.weight.mul_(50.0)  # values far from 0, so a wrong position would show
    prompts, actions, mask = value_episodes(grouped)
    calls = []
    extend = policy.transformer.extend
    monkeypatch.setattr(policy.transformer, "extend", lambda *args: calls.append(args[0].shape) or extend(*args))
    scored = policy.evaluate_episodes(prompts, actions, mask, with_values=True)
    assert bool(calls) == grouped, "grouped episodes take the shared-prompt path, distinct prompts the plain one"
    plain = policy.evaluate_episodes(prompts, actions, mask)
    torch.testing.assert_close(scored["log_prob"], plain["log_prob"], atol=1e-5, rtol=0)
    torch.testing.assert_close(scored["entropy"], plain["entropy"], atol=1e-5, rtol=0)
    assert scored["value"].shape == mask.shape and scored["final_value"].shape == (len(prompts),)
    assert (scored["value"][~mask] == 0).all()
    for row in range(len(prompts)):
        observation = prompts[row].clone()
        start = int(token_lengths(prompts[row : row + 1])[0])
        for step in range(int(mask[row].sum())):
            single = policy.evaluate_actions(observation[None], actions[row, step : step + 1])
            torch.testing.assert_close(
                scored["value"][row, step], policy.value(observation[None])[0], atol=1e-5, rtol=0
            )
            torch.testing.assert_close(scored["log_prob"][row, step], single["log_prob"][0], atol=1e-5, rtol=0)
            observation[start + step] = actions[row, step]
        # the observation after the last step (a full buffer for row 3 of the plain layout)
        torch.testing.assert_close(scored["final_value"][row], policy.value(observation[None])[0], atol=1e-5, rtol=0)
    assert scored["value"].abs().max() > 1e-2
    (scored["log_prob"].sum() + scored["value"].sum() + scored["final_value"].sum()).backward()
    assert policy.value_head.weight.grad is not None and policy.value_head.weight.grad.abs().sum() > 0
    trunk = policy.transformer if shared else policy.critic
    assert all(parameter.grad is not None for parameter in trunk.parameters())


def test_episode_values_need_a_value_head() -> None:
    prompts, actions, mask = value_episodes(grouped=False)
    with pytest.raises(RuntimeError, match="no value head"):
        tiny().evaluate_episodes(prompts, actions, mask, with_values=True)


def test_moe_blocks_report_aux_loss_and_expert_load() -> None:
    policy = tiny(num_experts=4, top_k=2)
    assert policy.is_moe
    result = policy.evaluate_actions(ragged_prompts(), torch.ones(5, dtype=torch.long))
    assert result["expert_load"].shape == (4,)
    torch.testing.assert_close(result["expert_load"].sum(), torch.tensor(1.0))
    assert result["aux_loss"].item() >= 1.0 - 1e-5  # E * sum f P >= 1 (uniform routing gives exactly 1)
    result["aux_loss"].backward()
    assert policy.transformer.blocks[0].feed_forward.router.weight.grad.abs().sum() > 0


def test_make_policy_builds_by_architecture_and_specs_round_trip() -> None:
    assert isinstance(make_policy(PolicySpec(), OBSERVATION_SPACE, ACTION_SPACE), ActorCritic)
    spec = PolicySpec(
        architecture="transformer",
        num_layers=1,
        num_heads=2,
        model_dim=8,
        context_length=20,
        temperature=0.5,
        top_p=0.9,
        value_head=True,
        shared_trunk=True,
    )
    restored = PolicySpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec
    policy = make_policy(restored, OBSERVATION_SPACE, ACTION_SPACE)
    assert isinstance(policy, TransformerPolicy) and policy.config.context_length == 20
    assert policy.num_parameters() == sum(p.numel() for p in policy.parameters())
    # a context longer than the observation lets the same weights read longer buffers (e.g. a harder math level)
    longer = torch.cat([ragged_prompts(), torch.zeros(5, 4, dtype=torch.long)], dim=1)
    assert policy.act(longer)[0].shape == (5,)


def test_predict_takes_numpy_single_and_batched_observations() -> None:
    policy = tiny()
    batch = ragged_prompts().numpy()
    actions, state = policy.predict(batch)
    assert state is None and actions.shape == (5,) and actions.dtype == np.int64
    single, _ = policy.predict(batch[0])
    assert single.shape == () and int(single) == int(actions[0])
    tensor = obs_to_tensor(batch, OBSERVATION_SPACE)
    np.testing.assert_array_equal(actions, policy.logits(tensor).argmax(-1).numpy())


def test_dropout_is_active_in_training_mode_only() -> None:
    torch.manual_seed(0)
    network = TokenTransformer(
        TransformerConfig(vocab_size=VOCAB, context_length=LENGTH, num_layers=1, num_heads=2, model_dim=16, dropout=0.5)
    )
    tokens = ragged_prompts((7, 7))
    network.train()
    assert not torch.equal(network(tokens).hidden, network(tokens).hidden)
    network.eval()
    torch.testing.assert_close(network(tokens).hidden, network(tokens).hidden)


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"architecture": "rnn"}, "architecture='rnn'"),
        ({"architecture": "transformer", "model_dim": 10, "num_heads": 4}, "not divisible by num_heads=4"),
        ({"architecture": "transformer", "num_layers": 0}, "num_layers"),
        ({"architecture": "transformer", "context_length": -1}, "context_length"),
        ({"architecture": "transformer", "temperature": 0.0}, "temperature=0.0"),
        ({"architecture": "transformer", "temperature": math.inf}, "temperature"),
        ({"architecture": "transformer", "top_p": 0.0}, "top_p=0.0"),
        ({"architecture": "transformer", "top_p": 1.5}, "top_p=1.5"),
        ({"temperature": 0.5}, "apply to architecture='transformer' only"),
    ],
)
def test_bad_transformer_spec_values_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicySpec(**kwargs)


@pytest.mark.parametrize(
    ("observation_space", "action_space", "error", "message"),
    [
        (spaces.Box(-1.0, 1.0, (8,), np.float32), ACTION_SPACE, TypeError, "token observation space"),
        (spaces.Box(0, 10, (5, 5, 3), np.uint8), ACTION_SPACE, TypeError, "token observation space"),
        (OBSERVATION_SPACE, spaces.Discrete(VOCAB + 1), TypeError, "A <= 12"),
        (OBSERVATION_SPACE, spaces.Discrete(4, start=1), TypeError, "start=0"),
        (OBSERVATION_SPACE, spaces.Box(-1, 1, (2,)), TypeError, "Discrete"),
    ],
)
def test_transformer_refuses_spaces_it_cannot_model(observation_space, action_space, error, message) -> None:
    with pytest.raises(error, match=message):
        make_policy(PolicySpec(architecture="transformer", model_dim=8, num_heads=2), observation_space, action_space)


def test_transformer_rejects_bad_token_batches() -> None:
    policy = tiny()
    gap = ragged_prompts()
    gap[0, 1] = 0
    with pytest.raises(ValueError, match="row 0 has PAD"):
        policy.act(gap)
    with pytest.raises(ValueError, match="row 0 is empty"):
        policy.act(torch.zeros(1, LENGTH, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the transformer's context_length=16"):
        policy.act(torch.ones(1, LENGTH + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="context_length=8"):
        make_policy(
            PolicySpec(architecture="transformer", model_dim=8, num_heads=2, context_length=8),
            OBSERVATION_SPACE,
            ACTION_SPACE,
        )
    prompts = ragged_prompts()
    with pytest.raises(ValueError, match="mask must be a prefix"):
        policy.evaluate_episodes(prompts, torch.ones(5, 3, dtype=torch.long), torch.tensor([[True, False, True]] * 5))
    with pytest.raises(ValueError, match="do not match a batch of 5"):
        policy.evaluate_actions(prompts, torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="4 indices for 5 observations"):
        policy.act_with_state(prompts, policy.initial_state(5, "cpu"), torch.arange(4))
    for indices in (torch.tensor([0, 1, 2, 3, 5]), np.array([0, 1, 2, 3, 5]), np.array([-1, 0, 1, 2, 3])):
        with pytest.raises(ValueError, match=r"indices must be in \[0, 5\)"):
            policy.act_with_state(prompts, policy.initial_state(5, "cpu"), indices)


@pytest.mark.parametrize("rows", [[0, 1, 2, 3, 4], [4, 0, 2]])
def test_numpy_and_tensor_indices_decode_alike(rows: list[int]) -> None:
    # the collector passes numpy indices, checked on the host; a tensor is checked on its device
    policy = tiny()
    prompts = ragged_prompts()[rows]
    results = []
    for indices in (np.array(rows), torch.tensor(rows)):
        state = policy.initial_state(5, "cpu")
        observation = prompts.clone()
        with torch.no_grad():
            for _ in range(3):
                chosen, log_probs, state = policy.act_with_state(observation, state, indices, deterministic=True)
                observation[torch.arange(len(rows)), token_lengths(observation)] = chosen.clamp(min=1)
        results.append((observation, log_probs, state.length.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][2], results[1][2])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert results[0][2][rows].tolist() == (token_lengths(results[0][0]) - 1).tolist()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decoding_matches_cpu() -> None:
    policy = tiny(num_experts=2, top_k=1)
    prompts = ragged_prompts()
    torch.manual_seed(4)
    actions, log_probs, mask, _ = roll_out(policy, prompts, steps=8)
    cuda_policy = policy.to("cuda")
    with torch.no_grad():
        scored = cuda_policy.evaluate_episodes(prompts.cuda(), actions.cuda(), mask.cuda())
        state = cuda_policy.initial_state(5, "cuda")
        greedy, greedy_log_probs, _ = cuda_policy.act_with_state(prompts.cuda(), state, torch.arange(5).cuda(), True)
    torch.testing.assert_close(scored["log_prob"].cpu(), torch.where(mask, log_probs, 0.0), atol=1e-4, rtol=0)
    assert greedy.device.type == "cuda" and greedy_log_probs.shape == (5,)


def check_dense_device_matches_cpu(device: str, monkeypatch) -> None:
    """A dense policy on ``device`` against the CPU: grouped scoring (shared prompts, rows of two episodes) with
    its gradients, and greedy decoding through a KV cache that grows."""
    monkeypatch.setattr(transformer_module, "GROUP_ROW_MAX_SLOTS", 10)
    monkeypatch.setattr(transformer_module, "CACHE_START_POSITIONS", 3)
    policy = tiny()
    prompts, actions, mask = grouped_episodes()
    cpu = score_and_grad(policy, prompts, actions, mask)
    torch.manual_seed(5)
    greedy_cpu = roll_out(policy, ragged_prompts(), steps=8, deterministic=True)
    on_device = policy.to(device)
    moved = score_and_grad(on_device, prompts.to(device), actions.to(device), mask.to(device))
    torch.testing.assert_close(moved[0].cpu(), cpu[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(moved[1].cpu(), cpu[1], atol=1e-4, rtol=0)
    for name, gradient in cpu[2].items():
        torch.testing.assert_close(moved[2][name].cpu(), gradient, atol=1e-3, rtol=1e-3, msg=name)
    state = on_device.initial_state(5, device)
    with torch.no_grad():
        first, _, state = on_device.act_with_state(ragged_prompts().to(device), state, torch.arange(5), True)
    assert first.device.type == torch.device(device).type and state.capacity >= int(PROMPT_LENGTHS[3])
    assert torch.equal(first.cpu(), greedy_cpu[0][:, 0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_dense_scoring_and_decoding_match_cpu(monkeypatch) -> None:
    check_dense_device_matches_cpu("cuda", monkeypatch)


# --- decoding by a CUDA graph of the all-rows step ------------------------------------------------------------------


def decode(policy: TransformerPolicy, prompts: torch.Tensor, schedule: list[list[int]], deterministic: bool):
    """Decode ``prompts`` (on the policy's device) step by step, step ``k`` advancing the rows ``schedule[k]`` only
    (rows left out keep their cache and resume later). Returns the final observations, the state, and per step
    ``(observation, rows, actions, log_probs)``."""
    observation = prompts.clone()
    state = policy.initial_state(prompts.shape[0], prompts.device)
    steps = []
    for rows in schedule:
        index = torch.tensor(rows, device=prompts.device)
        with torch.no_grad():
            chosen, log_probs, state = policy.act_with_state(observation[index], state, index, deterministic)
        steps.append((observation[index].clone(), index, chosen, log_probs))
        lengths = token_lengths(observation[index])
        observation[index, lengths] = chosen.clamp(min=1)  # no PAD: every row keeps going
    return observation, state, steps


SCHEDULE = [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 2, 3], [0, 1, 2, 3, 4], [1, 4], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("deterministic", [True, False])
def test_the_all_rows_graph_step_decodes_like_the_eager_step(deterministic: bool, monkeypatch) -> None:
    # the graph's logic without a capture: every row steps, rows left out write the unread slot past their length
    monkeypatch.setattr(transformer_module, "DECODE_GRAPH_ON_CPU", True)
    monkeypatch.setattr(TransformerPolicy, "cuda_graphs", True)
    policy = tiny()
    prompts = ragged_prompts()
    torch.manual_seed(3)
    observation, state, steps = decode(policy, prompts, SCHEDULE, deterministic)
    assert len(state.graphs) == 1 and state.capacity == LENGTH  # one graph for the rollout, cache at full context
    graph = next(iter(state.graphs.values()))
    assert graph.graph is None and graph.state.entries[0] is state.entries[0]  # no capture on a CPU; same tensors
    with torch.no_grad():
        for seen, _, chosen, log_probs in steps:
            # each step equals the full forward over its observations, also for rows that skipped steps before
            torch.testing.assert_close(log_probs, policy.evaluate_actions(seen, chosen)["log_prob"], atol=1e-5, rtol=0)
            if deterministic:
                assert torch.equal(chosen, policy.logits(seen).argmax(dim=-1))
    assert state.length.tolist() == (token_lengths(observation) - 1).tolist()
    if deterministic:
        monkeypatch.setattr(TransformerPolicy, "cuda_graphs", False)
        eager_observation, eager_state, _ = decode(policy, prompts, SCHEDULE, deterministic)
        assert torch.equal(observation, eager_observation) and not eager_state.graphs


def test_decoding_falls_back_to_eager_where_a_graph_cannot_serve(monkeypatch) -> None:
    monkeypatch.setattr(transformer_module, "DECODE_GRAPH_ON_CPU", True)
    prompts = ragged_prompts()
    rows = list(range(len(prompts)))
    for policy in (tiny(num_experts=2, top_k=1), tiny()):
        policy.cuda_graphs = policy.is_moe
        _, state, _ = decode(policy, prompts, [rows, rows], deterministic=True)
        assert not state.graphs, "MoE routing is data-dependent; cuda_graphs=False (the default) turns graphs off"
    monkeypatch.setattr(TransformerPolicy, "cuda_graphs", True)
    policy = tiny()
    state = policy.initial_state(len(prompts), "cpu")
    index = torch.arange(len(prompts))
    policy.act_with_state(prompts, state, index, True)  # gradients on: eager
    observation = prompts.clone()
    observation[index, token_lengths(prompts)] = 1
    policy.act_with_state(observation, state, index, True)
    assert not state.graphs
    # a row at the full context: the graph would write past it, so that step runs eagerly
    full = torch.randint(1, VOCAB, (2, LENGTH))
    full[1, 4:] = 0
    state = policy.initial_state(2, "cpu")
    with torch.no_grad():
        policy.act_with_state(full, state, torch.arange(2), True)
        state.length[0] = LENGTH  # as if row 0 had been decoded to the end
        grown = full.clone()
        grown[1, 4] = 3
        chosen, _, state = policy.act_with_state(grown[1:], state, torch.tensor([1]), True)
    assert not state.graphs and int(chosen[0]) == int(policy.logits(grown[1:]).argmax())
    monkeypatch.setattr(transformer_module, "DECODE_GRAPH_MAX_CACHE_BYTES", 0)
    _, state, _ = decode(policy, prompts, [rows, rows], deterministic=True)
    assert not state.graphs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_decoding_matches_eager_decoding() -> None:
    policy = tiny().to("cuda")
    policy.cuda_graphs = True
    prompts = ragged_prompts().cuda()
    observation, state, steps = decode(policy, prompts, SCHEDULE, deterministic=True)
    graph = next(iter(state.graphs.values()))
    assert graph.graph is not None, "the step was recorded as a CUDA graph"
    policy.cuda_graphs = False
    eager_observation, eager_state, eager_steps = decode(policy, prompts, SCHEDULE, deterministic=True)
    assert not eager_state.graphs and torch.equal(observation, eager_observation)
    for (_, _, _, log_probs), (_, _, _, eager_log_probs) in zip(steps, eager_steps, strict=True):
        torch.testing.assert_close(log_probs, eager_log_probs, atol=1e-5, rtol=0)
    policy.cuda_graphs = True
    # sampling: every replay draws fresh noise, and each sample's log-probability is the full forward's
    torch.manual_seed(0)
    first, _, sampled_steps = decode(policy, prompts, SCHEDULE, deterministic=False)
    second, _, _ = decode(policy, prompts, SCHEDULE, deterministic=False)
    assert not torch.equal(first, second)
    with torch.no_grad():
        for seen, _, chosen, log_probs in sampled_steps:
            torch.testing.assert_close(log_probs, policy.evaluate_actions(seen, chosen)["log_prob"], atol=1e-4, rtol=0)
