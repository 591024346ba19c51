"""bf16 mixed precision of the token transformer: what runs in bf16 and what stays fp32, agreement with fp32 and
between decoding and scoring, the row padding that keeps oneDNN's bf16 shapes few, and bad values."""

from __future__ import annotations

import pytest
import torch

from agents import transformer as transformer_module
from agents.transformer import PRECISIONS
from tests.agents.test_transformer import grouped_episodes, ragged_prompts, roll_out, score_and_grad, tiny

# bf16 keeps 8 significant bits: log-probabilities of these tiny models move by about 0.01 (measured at most 0.010
# against fp32 and 0.005 between decoding and scoring, widths 16 and 64; 0.017 and 0.011 with a bf16 policy head);
# a broken path is off by far more
BF16_LOG_PROB_ATOL = 0.05


def bf16(**overrides) -> transformer_module.TransformerPolicy:
    return tiny(**overrides).set_precision("bf16")


def test_precision_defaults_to_fp32_and_is_not_part_of_the_spec() -> None:
    policy = tiny()
    assert policy.precision == "fp32" and PRECISIONS == ("fp32", "bf16")
    assert policy.set_precision("bf16") is policy and policy.precision == "bf16"
    assert "precision" not in policy.spec.to_dict()
    assert tiny().precision == "fp32", "an instance's precision does not leak into the class"


def test_bf16_computes_the_products_in_bf16_and_keeps_weights_cache_and_outputs_right() -> None:
    policy = bf16(value_head=True, shared_trunk=True)
    dtypes: list[torch.dtype] = []
    heads: list[torch.dtype] = []
    hook = policy.transformer.blocks[0].feed_forward.fc.register_forward_hook(
        lambda module, inputs, output: dtypes.append(output.dtype)
    )
    head_hook = policy.policy_head.register_forward_hook(lambda module, inputs, output: heads.append(output.dtype))
    prompts = ragged_prompts()
    torch.manual_seed(1)
    actions, log_probs, mask, _ = roll_out(policy, prompts, steps=6)
    state = policy.initial_state(3, "cpu")
    assert all(entries.dtype == torch.bfloat16 for entries in state.entries), "the KV cache is bf16"
    scored = policy.evaluate_episodes(prompts, actions, mask, with_values=True)
    (scored["log_prob"].sum() + scored["value"].sum()).backward()
    hook.remove()
    head_hook.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}, "every feed-forward product ran in bf16"
    assert heads and set(heads) == {torch.float32}, "the policy head stays fp32: the losses read its logits"
    assert log_probs.dtype == torch.float32
    for name in ("log_prob", "entropy", "value", "final_value"):
        assert scored[name].dtype == torch.float32, name
    assert policy.logits(prompts).dtype == policy.value(prompts).dtype == torch.float32
    for name, parameter in policy.named_parameters():
        assert parameter.dtype == torch.float32 and parameter.grad is not None, name
        assert parameter.grad.dtype == torch.float32 and torch.isfinite(parameter.grad).all(), name


def test_bf16_sdpa_runs_in_fp32_on_a_cpu(monkeypatch) -> None:
    # the CPU's bf16 SDPA kernel is slow (its backward was most of a bf16 SFT step), so bf16 queries go in as fp32
    policy = bf16()
    seen: list[torch.dtype] = []
    sdpa = transformer_module.F.scaled_dot_product_attention

    def spy(query, key, value, **options):
        out = sdpa(query, key, value, **options)
        seen.extend((query.dtype, out.dtype))  # under autocast, fp32 inputs would still give a bf16 result
        return out

    monkeypatch.setattr(transformer_module.F, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(transformer_module, "DECODE_ELEMENTWISE_MAX_WIDTH", 0)  # decoding through SDPA too
    prompts = ragged_prompts()
    torch.manual_seed(2)
    actions, log_probs, mask, _ = roll_out(policy, prompts, steps=4)
    logits, _, _ = policy.episode_logits(prompts, actions, mask)  # distinct prompts: the full causal forward
    logits.square().mean().backward()
    assert len(seen) > 2 * policy.config.num_layers and set(seen) == {torch.float32}
    assert logits.dtype == torch.float32 and torch.isfinite(policy.policy_head.weight.grad).all()


@pytest.mark.parametrize("model_dim", [16, 64])
def test_bf16_decoding_agrees_with_scoring_and_with_fp32(model_dim: int) -> None:
    policy, reference = bf16(model_dim=model_dim), tiny(model_dim=model_dim)
    prompts = ragged_prompts()
    torch.manual_seed(1)
    actions, log_probs, mask, checks = roll_out(policy, prompts, steps=10, stop_row_at={1: 3})
    assert mask[1].sum() <= 4 and mask[:, 4:].any(), "rows leave at different steps: decoding runs on a subset"
    with torch.no_grad():
        for observation, chosen, chosen_log_probs in checks:
            full = policy.evaluate_actions(observation, chosen)["log_prob"]
            torch.testing.assert_close(chosen_log_probs, full, atol=BF16_LOG_PROB_ATOL, rtol=0)
        scored = policy.evaluate_episodes(prompts, actions, mask)["log_prob"]
        exact = reference.evaluate_episodes(prompts, actions, mask)["log_prob"]
    torch.testing.assert_close(scored, torch.where(mask, log_probs, 0.0), atol=BF16_LOG_PROB_ATOL, rtol=0)
    torch.testing.assert_close(scored, exact, atol=BF16_LOG_PROB_ATOL, rtol=0)
    assert not torch.equal(scored, exact), "bf16 rounds differently from fp32: it really ran in bf16"


def test_bf16_update_gradients_agree_with_fp32() -> None:
    prompts, actions, mask = grouped_episodes()
    half, full = score_and_grad(bf16(), prompts, actions, mask), score_and_grad(tiny(), prompts, actions, mask)
    torch.testing.assert_close(half[0], full[0], atol=BF16_LOG_PROB_ATOL, rtol=0)
    for name, gradient in full[2].items():
        relative = float((half[2][name] - gradient).norm() / gradient.norm())
        assert relative < 0.05, f"{name}: bf16 gradient {relative:.3f} away from fp32's (measured below 0.01)"


def test_padded_update_tokens_change_neither_scores_nor_gradients(monkeypatch) -> None:
    policy = bf16()
    prompts, actions, mask = grouped_episodes()
    packed = int((mask.sum(dim=1) - 1).sum())
    seen: list[int] = []
    extend = policy.transformer.extend

    def spy(tokens, positions, layout, past_keys, past_values):
        seen.append(tokens.shape[0])
        return extend(tokens, positions, layout, past_keys, past_values)

    monkeypatch.setattr(policy.transformer, "extend", spy)
    monkeypatch.setattr(transformer_module, "BF16_CPU_ROW_MULTIPLE", 8)
    padded = score_and_grad(policy, prompts, actions, mask)
    monkeypatch.setattr(transformer_module, "BF16_CPU_ROW_MULTIPLE", 1)
    plain = score_and_grad(policy, prompts, actions, mask)
    assert packed % 8 and seen == [-(-packed // 8) * 8, packed], "the update ran padding tokens, then none"
    torch.testing.assert_close(padded[0], plain[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(padded[1], plain[1], atol=1e-6, rtol=0)
    assert (padded[0][~mask] == 0).all()
    for name, gradient in plain[2].items():
        torch.testing.assert_close(padded[2][name], gradient, atol=1e-5, rtol=1e-4, msg=name)
    # fp32 never pads: its products have no per-shape cost
    seen.clear()
    score_and_grad(tiny(), prompts, actions, mask)
    assert not seen or seen == [packed]


def test_padded_decoding_rows_decode_like_unpadded_ones(monkeypatch) -> None:
    prompts = ragged_prompts(lengths=(3, 5, 1, 7, 2, 4, 6))
    steps: list[int] = []
    results = []
    for multiple in (4, 1):
        policy = bf16()
        step = policy.transformer.step
        monkeypatch.setattr(
            policy.transformer,
            "step",
            lambda tokens, positions, cache, rows, width, step=step: (
                steps.append(tokens.shape[0]) or step(tokens, positions, cache, rows, width)
            ),
        )
        monkeypatch.setattr(transformer_module, "BF16_CPU_ROW_MULTIPLE", multiple)
        # greedy: sampling would draw its noise for the padding rows too, shifting the random stream
        results.append(roll_out(policy, prompts, steps=8, deterministic=True, stop_row_at={1: 1, 4: 2})[:3])
    padded_steps, plain_steps = steps[: len(steps) // 2], steps[len(steps) // 2 :]
    assert any(count % 4 for count in plain_steps), "some decoding step ran a row count that needs padding"
    assert all(count % 4 == 0 or count == len(prompts) for count in padded_steps)
    (actions, log_probs, mask), (plain_actions, plain_log_probs, plain_mask) = results
    assert torch.equal(mask, plain_mask) and torch.equal(actions, plain_actions)
    torch.testing.assert_close(log_probs, plain_log_probs, atol=1e-6, rtol=0)


def test_set_precision_rejects_what_it_cannot_run(monkeypatch) -> None:
    policy = tiny()
    with pytest.raises(ValueError, match="precision='fp16' is not accepted; choose one of fp32, bf16"):
        policy.set_precision("fp16")
    policy_class = transformer_module.TransformerPolicy
    monkeypatch.setattr(policy_class, "device", property(lambda self: torch.device("mps")))
    with pytest.raises(ValueError, match="runs on a CPU or a CUDA GPU, not on mps; use precision='fp32'"):
        policy.set_precision("bf16")
    monkeypatch.setattr(policy_class, "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Tesla T4")
    with pytest.raises(ValueError, match="Tesla T4 has no bfloat16 support"):
        policy.set_precision("bf16")
    assert policy.precision == "fp32", "a refused value leaves the policy as it was"


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or not torch.cuda.is_bf16_supported(), reason="needs a CUDA GPU with bf16"
)
def test_cuda_bf16_scores_and_decodes_like_the_cpu() -> None:
    policy = tiny()
    prompts = ragged_prompts()
    torch.manual_seed(4)
    actions, log_probs, mask, _ = roll_out(policy, prompts, steps=8)
    grouped = grouped_episodes()
    exact = score_and_grad(policy, *grouped)
    on_gpu = policy.to("cuda").set_precision("bf16")
    with torch.no_grad():
        scored = on_gpu.evaluate_episodes(prompts.cuda(), actions.cuda(), mask.cuda())["log_prob"]
        state = on_gpu.initial_state(5, "cuda")
        greedy, greedy_log_probs, _ = on_gpu.act_with_state(prompts.cuda(), state, torch.arange(5).cuda(), True)
    assert state.entries[0].dtype == torch.bfloat16 and greedy_log_probs.dtype == torch.float32
    torch.testing.assert_close(scored.cpu(), torch.where(mask, log_probs, 0.0), atol=BF16_LOG_PROB_ATOL, rtol=0)
    half = score_and_grad(on_gpu, *(part.cuda() for part in grouped))
    torch.testing.assert_close(half[0].cpu(), exact[0], atol=BF16_LOG_PROB_ATOL, rtol=0)
    for name, gradient in exact[2].items():
        assert float((half[2][name].cpu() - gradient).norm() / gradient.norm()) < 0.05, name
