"""ActorCritic built from small Gymnasium spaces: shapes, distributions by hand, predict, critic options, specs."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents import ActorCritic, Policy, PolicySpec, make_policy, obs_to_tensor
from agents.heads import make_head

OBSERVATION_SPACES = {
    "box": spaces.Box(-1.0, 1.0, (4,), np.float32),
    "box2d": spaces.Box(-1.0, 1.0, (2, 3), np.float32),
    "grid": spaces.Box(0, 10, (5, 5, 3), np.uint8),
    "tokens": spaces.Box(0, 20, (12,), np.int64),
    "discrete": spaces.Discrete(5, start=2),
    "multidiscrete": spaces.MultiDiscrete([3, 4]),
    "multibinary": spaces.MultiBinary(3),
    "dict": spaces.Dict({"image": spaces.Box(0, 255, (7, 7, 3), np.uint8), "direction": spaces.Discrete(4)}),
}
ACTION_SPACES = {
    "discrete": spaces.Discrete(3),
    "discrete_start": spaces.Discrete(4, start=-1),
    "box": spaces.Box(-2.0, 2.0, (2,), np.float32),
    "box2d": spaces.Box(-1.0, 1.0, (2, 2), np.float32),
    "multidiscrete": spaces.MultiDiscrete([2, 3]),
    "multibinary": spaces.MultiBinary(2),
}
SPECS = {
    "grpo_dense": PolicySpec(hidden_sizes=(16,)),
    "ppo_separate": PolicySpec(hidden_sizes=(16, 16), value_head=True),
    "ppo_moe_shared": PolicySpec(hidden_sizes=(16, 8), value_head=True, shared_trunk=True, num_experts=3, top_k=2),
}
BATCH = 6


def sample_batch(space: spaces.Space, batch: int, seed: int = 0) -> np.ndarray | dict[str, np.ndarray]:
    """``batch`` observations of ``space`` stacked on a leading axis (dicts per key)."""
    space.seed(seed)
    samples = [space.sample() for _ in range(batch)]
    if isinstance(space, spaces.Dict):
        return {key: np.stack([sample[key] for sample in samples]) for key in space.spaces}
    return np.stack(samples)


def make(observation: str, action: str, spec: PolicySpec | None = None, seed: int = 0) -> ActorCritic:
    torch.manual_seed(seed)
    return make_policy(spec or PolicySpec(), OBSERVATION_SPACES[observation], ACTION_SPACES[action])


def expected_action_shape(space: spaces.Space) -> tuple[int, ...]:
    return (BATCH,) if isinstance(space, spaces.Discrete) else (BATCH, *space.shape)


# --- shapes for every encoder x head x critic option ---------------------------------------------------------------


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("action_name", list(ACTION_SPACES))
@pytest.mark.parametrize("observation_name", list(OBSERVATION_SPACES))
def test_shapes_for_every_combination(observation_name: str, action_name: str, spec_name: str) -> None:
    spec = SPECS[spec_name]
    policy = make(observation_name, action_name, spec)
    observation_space, action_space = OBSERVATION_SPACES[observation_name], ACTION_SPACES[action_name]
    observation = obs_to_tensor(sample_batch(observation_space, BATCH), observation_space)

    actions, log_prob = policy.act(observation)
    assert tuple(actions.shape) == expected_action_shape(action_space)
    assert log_prob.shape == (BATCH,) and torch.isfinite(log_prob).all()

    evaluation = policy.evaluate_actions(observation, actions)
    torch.testing.assert_close(evaluation["log_prob"], log_prob)  # the sampled actions' log-prob round-trips
    assert evaluation["entropy"].shape == (BATCH,)
    assert evaluation["aux_loss"].shape == ()
    if spec.value_head:
        assert evaluation["value"].shape == (BATCH,)
        assert policy.value(observation).shape == (BATCH,)
    else:
        assert "value" not in evaluation
    if spec.num_experts:
        assert evaluation["expert_load"].shape == (spec.num_experts,)
        assert evaluation["aux_loss"].requires_grad
    else:
        assert "expert_load" not in evaluation and evaluation["aux_loss"].item() == 0.0

    # Every action act/predict produce is a valid env action (Box ones after predict's clipping).
    batch_actions, state = policy.predict(sample_batch(observation_space, BATCH, seed=1), deterministic=False)
    assert state is None and batch_actions.shape == expected_action_shape(action_space)
    assert all(action_space.contains(action) for action in batch_actions)
    if not isinstance(action_space, spaces.Box):
        assert all(action_space.contains(action) for action in actions.numpy().astype(action_space.dtype))


def test_policy_protocol() -> None:
    policy = make("box", "discrete")
    assert isinstance(policy, Policy)
    assert policy.num_parameters() == sum(p.numel() for p in policy.parameters()) > 0


# --- distributions by hand -------------------------------------------------------------------------------------------


def test_categorical_log_prob_and_entropy_by_hand() -> None:
    policy = make("box", "discrete")
    logits = np.array([0.5, -1.0, 2.0])
    with torch.no_grad():
        policy.policy_head.logits.weight.zero_()
        policy.policy_head.logits.bias.copy_(torch.as_tensor(logits))
    observation = torch.randn(4, 4)
    actions = torch.tensor([0, 1, 2, 2])
    evaluation = policy.evaluate_actions(observation, actions)

    log_softmax = logits - np.log(np.exp(logits).sum())
    np.testing.assert_allclose(evaluation["log_prob"].detach().numpy(), log_softmax[[0, 1, 2, 2]], rtol=1e-6)
    entropy = -np.sum(np.exp(log_softmax) * log_softmax)
    np.testing.assert_allclose(evaluation["entropy"].detach().numpy(), np.full(4, entropy), rtol=1e-6)


def test_categorical_matches_torch_distribution_on_trained_like_weights() -> None:
    policy = make("box", "discrete", PolicySpec(orthogonal_init=False))
    observation = torch.randn(8, 4)
    actions = torch.randint(0, 3, (8,))
    features = policy.trunk(policy.encoder(observation)).features
    reference = torch.distributions.Categorical(logits=policy.policy_head.logits(features))
    evaluation = policy.evaluate_actions(observation, actions)
    torch.testing.assert_close(evaluation["log_prob"], reference.log_prob(actions))
    torch.testing.assert_close(evaluation["entropy"], reference.entropy())


def test_gaussian_log_prob_and_entropy_by_hand() -> None:
    policy = make("box", "box", PolicySpec(log_std_init=-0.3))
    mean, log_std = np.array([0.3, -0.2]), np.array([-0.5, 0.1])
    with torch.no_grad():
        policy.policy_head.mean.weight.zero_()
        policy.policy_head.mean.bias.copy_(torch.as_tensor(mean))
        policy.policy_head.log_std.copy_(torch.as_tensor(log_std))
    actions = np.array([[0.0, 0.0], [1.0, -1.0], [0.3, -0.2]])
    evaluation = policy.evaluate_actions(torch.randn(3, 4), torch.as_tensor(actions, dtype=torch.float32))

    std = np.exp(log_std)
    per_dim = -0.5 * ((actions - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(evaluation["log_prob"].detach().numpy(), per_dim.sum(axis=1), rtol=1e-5)
    entropy = np.sum(0.5 + 0.5 * math.log(2 * math.pi) + log_std)
    np.testing.assert_allclose(evaluation["entropy"].detach().numpy(), np.full(3, entropy), rtol=1e-5)
    torch.testing.assert_close(policy.log_std, policy.policy_head.log_std)


def test_log_std_init_and_log_std_only_for_gaussian() -> None:
    policy = make("box", "box", PolicySpec(log_std_init=-0.7))
    torch.testing.assert_close(policy.log_std.detach(), torch.full((2,), -0.7))
    assert not hasattr(make("box", "discrete"), "log_std")


def test_deterministic_act_is_the_mode() -> None:
    categorical = make("box", "discrete_start", PolicySpec(orthogonal_init=False))
    observation = torch.randn(16, 4)
    actions, log_prob = categorical.act(observation, deterministic=True)
    features = categorical.trunk(categorical.encoder(observation)).features
    logits = categorical.policy_head.logits(features)
    assert torch.equal(actions, logits.argmax(-1) - 1)  # Discrete(4, start=-1)
    torch.testing.assert_close(log_prob, torch.log_softmax(logits, -1).max(-1).values)

    gaussian = make("box", "box")
    with torch.no_grad():
        gaussian.policy_head.mean.weight.zero_()
        gaussian.policy_head.mean.bias.copy_(torch.tensor([0.25, -0.75]))
    actions, _ = gaussian.act(observation, deterministic=True)
    torch.testing.assert_close(actions, torch.tensor([[0.25, -0.75]]).expand(16, 2))

    binary = make("box", "multibinary")
    with torch.no_grad():
        binary.policy_head.logits.weight.zero_()
        binary.policy_head.logits.bias.copy_(torch.tensor([1.0, -1.0]))
    actions, _ = binary.act(observation, deterministic=True)
    assert torch.equal(actions, torch.tensor([[1, 0]]).expand(16, 2))


def test_discrete_start_offset_round_trips() -> None:
    policy = make("box", "discrete_start")
    observation = torch.randn(200, 4)
    actions, log_prob = policy.act(observation)
    assert actions.min() >= -1 and actions.max() <= 2 and (actions == -1).any()
    torch.testing.assert_close(policy.evaluate_actions(observation, actions)["log_prob"], log_prob)
    # (B, 1) actions, as a rollout buffer may store them, and numpy actions are accepted too.
    torch.testing.assert_close(policy.evaluate_actions(observation, actions[:, None])["log_prob"], log_prob)
    torch.testing.assert_close(policy.evaluate_actions(observation, actions.numpy())["log_prob"], log_prob)


def test_evaluate_actions_rejects_wrong_batch() -> None:
    policy = make("box", "box")
    with pytest.raises(ValueError, match="do not match a batch of 3"):
        policy.evaluate_actions(torch.randn(3, 4), torch.zeros(5, 2))


# --- predict ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("observation_name", ["box", "grid", "tokens", "discrete", "dict"])
def test_predict_single_matches_batch(observation_name: str) -> None:
    policy = make(observation_name, "discrete", PolicySpec(orthogonal_init=False))
    space = OBSERVATION_SPACES[observation_name]
    batch = sample_batch(space, BATCH)
    batch_actions, _ = policy.predict(batch)
    assert batch_actions.shape == (BATCH,) and batch_actions.dtype == np.int64
    for index in range(BATCH):
        single = {key: value[index] for key, value in batch.items()} if isinstance(batch, dict) else batch[index]
        action, state = policy.predict(single)
        assert state is None and isinstance(action, np.ndarray) and action.shape == ()
        assert action == batch_actions[index]


def test_predict_clips_box_actions_but_act_does_not() -> None:
    policy = make("box", "box")
    with torch.no_grad():
        policy.policy_head.mean.bias.copy_(torch.tensor([10.0, -10.0]))
    action, _ = policy.predict(np.zeros(4, dtype=np.float32))
    assert action.dtype == np.float32 and action.shape == (2,)
    np.testing.assert_array_equal(action, [2.0, -2.0])
    raw, _ = policy.act(torch.zeros(1, 4), deterministic=True)
    torch.testing.assert_close(raw, torch.tensor([[10.0, -10.0]]))


def test_predict_rejects_wrong_shape() -> None:
    policy = make("box", "discrete")
    with pytest.raises(ValueError, match=r"neither one observation \(4,\) nor a batch"):
        policy.predict(np.zeros(5))


def test_predict_and_sb3_evaluate_on_gymnasium_envs() -> None:
    from stable_baselines3.common.evaluation import evaluate_policy

    for env_id in ("CartPole-v1", "Pendulum-v1"):
        env = gym.make(env_id)
        torch.manual_seed(0)
        policy = make_policy(PolicySpec(), env.observation_space, env.action_space)
        observation, _ = env.reset(seed=0)
        action, _ = policy.predict(observation)
        assert env.action_space.contains(action)
        env.step(action)
        mean_reward, _ = evaluate_policy(policy, env, n_eval_episodes=1, warn=False)
        assert np.isfinite(mean_reward)
        env.close()


# --- critic options ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("observation_name", list(OBSERVATION_SPACES))
def test_critic_free_policy_has_no_value_parameters(observation_name: str) -> None:
    policy = make(observation_name, "discrete", PolicySpec(value_head=False, num_experts=2, top_k=1))
    names = [name for name, _ in policy.named_parameters()]
    assert names and not any("value" in name or "critic" in name for name in names)
    assert not policy.has_value
    with pytest.raises(RuntimeError, match="no value head"):
        policy.value(obs_to_tensor(sample_batch(OBSERVATION_SPACES[observation_name], 2), policy.observation_space))
    _, value, _ = policy.forward_dist(
        obs_to_tensor(sample_batch(OBSERVATION_SPACES[observation_name], 2), policy.observation_space)
    )
    assert value is None


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_shared_trunk_shares_encoder_and_trunk() -> None:
    policy = make("grid", "discrete", PolicySpec(value_head=True, shared_trunk=True))
    names = [name for name, _ in policy.named_parameters()]
    assert not any("critic" in name for name in names)
    assert [name for name in names if "value" in name] == ["value_head.weight", "value_head.bias"]
    observation = obs_to_tensor(sample_batch(OBSERVATION_SPACES["grid"], 4), OBSERVATION_SPACES["grid"])
    policy.value(observation).sum().backward()
    assert _grad_norm(policy.trunk) > 0 and _grad_norm(policy.encoder) > 0
    assert _grad_norm(policy.policy_head) == 0
    separate = make("grid", "discrete", PolicySpec(value_head=True))
    assert separate.num_parameters() > policy.num_parameters()


def test_separate_critic_does_not_touch_actor() -> None:
    policy = make("grid", "box", PolicySpec(value_head=True, shared_trunk=False))
    observation = obs_to_tensor(sample_batch(OBSERVATION_SPACES["grid"], 4), OBSERVATION_SPACES["grid"])
    policy.value(observation).sum().backward()
    assert _grad_norm(policy.critic_encoder) > 0 and _grad_norm(policy.critic_trunk) > 0
    assert _grad_norm(policy.encoder) == 0 and _grad_norm(policy.trunk) == 0 and _grad_norm(policy.policy_head) == 0
    policy.zero_grad(set_to_none=True)
    actions, _ = policy.act(observation)
    policy.evaluate_actions(observation, actions)["log_prob"].sum().backward()
    assert _grad_norm(policy.critic_encoder) == 0 and _grad_norm(policy.value_head) == 0
    assert _grad_norm(policy.trunk) > 0


def test_actor_weights_load_into_actor_critic() -> None:
    actor = make("tokens", "discrete", PolicySpec())
    actor_critic = make("tokens", "discrete", PolicySpec(value_head=True), seed=1)
    result = actor_critic.load_state_dict(actor.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(key.startswith(("critic_", "value_head")) for key in result.missing_keys)
    observation = obs_to_tensor(sample_batch(OBSERVATION_SPACES["tokens"], 3), OBSERVATION_SPACES["tokens"])
    actions = torch.tensor([0, 1, 2])
    torch.testing.assert_close(
        actor_critic.evaluate_actions(observation, actions)["log_prob"],
        actor.evaluate_actions(observation, actions)["log_prob"],
    )


# --- initialisation ------------------------------------------------------------------------------------------------


def _assert_orthogonal(weight: torch.Tensor, gain: float) -> None:
    matrix = weight.detach().flatten(1)
    small = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
    torch.testing.assert_close(small, gain**2 * torch.eye(small.shape[0]), atol=1e-5, rtol=1e-4)


def test_orthogonal_init_gains() -> None:
    policy = make("box", "discrete", PolicySpec(value_head=True, hidden_sizes=(32, 32)))
    _assert_orthogonal(policy.trunk.net[0].weight, math.sqrt(2))
    _assert_orthogonal(policy.trunk.net[2].weight, math.sqrt(2))
    _assert_orthogonal(policy.policy_head.logits.weight, 0.01)
    _assert_orthogonal(policy.value_head.weight, 1.0)
    assert all(float(p.detach().abs().sum()) == 0 for name, p in policy.named_parameters() if name.endswith("bias"))
    moe = make("box", "discrete", PolicySpec(hidden_sizes=(32, 32), num_experts=3, top_k=1))
    for expert in range(3):
        _assert_orthogonal(moe.trunk.moe.weights[0][expert], math.sqrt(2))
    _assert_orthogonal(moe.trunk.moe.router.weight, 0.01)
    plain = make("box", "discrete", PolicySpec(orthogonal_init=False))
    assert float(plain.policy_head.logits.weight.detach().abs().max()) > 0.02  # PyTorch's default, not the 0.01 gain


# --- specs, rebuilding and errors -----------------------------------------------------------------------------------


def test_spec_json_round_trip_rebuilds_identical_module() -> None:
    spec = PolicySpec(hidden_sizes=(8, 4), activation="gelu", value_head=True, num_experts=2, top_k=1)
    restored = PolicySpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec and isinstance(restored.hidden_sizes, tuple)
    space, action_space = OBSERVATION_SPACES["dict"], ACTION_SPACES["box"]
    torch.manual_seed(3)
    original = make_policy(spec, space, action_space)
    rebuilt = make_policy(restored, space, action_space)
    state = original.state_dict()
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in rebuilt.state_dict().items()}
    rebuilt.load_state_dict(state)
    observation = obs_to_tensor(sample_batch(space, 3), space)
    torch.testing.assert_close(original.act(observation, True), rebuilt.act(observation, True))


def test_spec_normalises_numpy_and_json_values() -> None:
    spec = PolicySpec(hidden_sizes=[np.int64(8)], value_head=np.bool_(True), log_std_init=np.float32(-0.5), top_k=1)
    assert spec.hidden_sizes == (8,) and spec.value_head is True and type(spec.log_std_init) is float
    assert json.loads(json.dumps(spec.to_dict()))["hidden_sizes"] == [8]


def test_every_spec_field_has_help_text() -> None:
    import dataclasses

    for item in dataclasses.fields(PolicySpec):
        assert item.metadata.get("help"), item.name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "sigmoid"}, "activation='sigmoid'"),
        ({"hidden_sizes": ()}, "hidden_sizes"),
        ({"hidden_sizes": (64, 0)}, "hidden_sizes"),
        ({"hidden_sizes": 64}, "hidden_sizes"),
        ({"conv_channels": (16, -1)}, "conv_channels"),
        ({"shared_trunk": True}, "needs value_head=True"),
        ({"value_head": "yes"}, "value_head"),
        ({"log_std_init": float("nan")}, "log_std_init"),
        ({"log_std_init": True}, "log_std_init"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"num_experts": -1}, "num_experts"),
        ({"num_experts": 2, "top_k": 3}, "top_k=3 exceeds num_experts=2"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_bad_spec_values_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicySpec(**kwargs)


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown PolicySpec fields \\['hiden_sizes'\\]"):
        PolicySpec.from_dict({"hiden_sizes": [64]})


@pytest.mark.parametrize(
    ("observation_space", "action_space", "message"),
    [
        (spaces.Text(10), spaces.Discrete(2), "Text"),
        (spaces.Dict({"image": OBSERVATION_SPACES["grid"], "mission": spaces.Text(5)}), spaces.Discrete(2), "mission"),
        (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))), spaces.Discrete(2), "Tuple"),
        (OBSERVATION_SPACES["box"], spaces.Box(0, 3, (2,), np.int64), "floating dtype"),
        (OBSERVATION_SPACES["box"], spaces.Tuple((spaces.Discrete(2),)), "no action head"),
    ],
)
def test_unsupported_spaces_raise(observation_space: spaces.Space, action_space: spaces.Space, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        make_policy(PolicySpec(), observation_space, action_space)


def test_make_policy_needs_a_spec() -> None:
    with pytest.raises(TypeError, match="needs a PolicySpec"):
        make_policy({"hidden_sizes": (64,)}, OBSERVATION_SPACES["box"], ACTION_SPACES["discrete"])


# --- the categorical fast path ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, -1])
def test_categorical_act_draws_exactly_what_the_distribution_draws(start: int) -> None:
    # The collector's actions must stay bit-identical to Categorical sampling, so seeded runs reproduce across the
    # change; peaked and flat logits, and -inf (impossible) actions, on one batch.
    head = make_head(8, spaces.Discrete(5, start=start), 0.0)
    features = torch.randn(512, 8) * 3
    with torch.no_grad():
        head.logits.bias.copy_(torch.tensor([0.0, -math.inf, 2.0, 0.5, -1.0]))
    for seed in range(5):
        torch.manual_seed(seed)
        actions, log_prob = head.act(features)
        after_fast = torch.rand(3)
        torch.manual_seed(seed)
        distribution = torch.distributions.Categorical(logits=head.logits(features), validate_args=False)
        sample = distribution.sample()
        after_reference = torch.rand(3)
        assert torch.equal(actions, sample + start)
        assert torch.equal(log_prob, distribution.log_prob(sample))
        assert torch.equal(after_fast, after_reference)  # the same random numbers were consumed
        assert not (actions == 1 + start).any()  # probability 0 is never drawn
    greedy, greedy_log_prob = head.act(features, deterministic=True)
    assert torch.equal(greedy, distribution.logits.argmax(-1) + start)
    assert torch.equal(greedy_log_prob, distribution.log_prob(greedy - start))


def test_categorical_evaluate_matches_the_distribution_with_gradients() -> None:
    head = make_head(8, spaces.Discrete(4, start=2), 0.0)
    features = torch.randn(64, 8, requires_grad=True)
    actions = torch.randint(2, 6, (64,))
    log_prob, entropy = head.evaluate(features, actions)
    distribution = torch.distributions.Categorical(logits=head.logits(features))
    assert torch.equal(log_prob, distribution.log_prob(actions - 2))
    torch.testing.assert_close(entropy, distribution.entropy())
    fast_grad = torch.autograd.grad((log_prob + entropy).sum(), features)[0]
    reference_grad = torch.autograd.grad((distribution.log_prob(actions - 2) + distribution.entropy()).sum(), features)
    torch.testing.assert_close(fast_grad, reference_grad[0])
    with torch.no_grad():
        head.logits.bias.copy_(torch.tensor([0.0, -math.inf, 1.0, 1.0]))
    _, entropy = head.evaluate(features, actions)
    assert torch.isfinite(entropy).all()  # an impossible action contributes 0 * log 0 = 0, not NaN


def test_categorical_act_reports_diverged_weights() -> None:
    head = make_head(4, spaces.Discrete(3), 0.0)
    with torch.no_grad():
        head.logits.bias.fill_(math.nan)
    with pytest.raises(ValueError, match="NaN action probabilities"):
        head.act(torch.zeros(2, 4))


# --- shared rows: each distinct observation scored once ---------------------------------------------------------


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("observation_name", ["dict", "grid", "box"])
def test_shared_rows_give_what_repeated_observations_give(observation_name: str, spec_name: str) -> None:
    # 3 distinct observations, 8 actions taken at them: scoring the 3 once and gathering must match scoring the 8
    # repeated rows, in values and in every parameter's gradient (the gather's backward sums over the repeats)
    space = OBSERVATION_SPACES[observation_name]
    distinct = sample_batch(space, 3, seed=4)
    rows = torch.tensor([0, 2, 2, 1, 0, 0, 2, 1])
    repeated = {k: v[rows.numpy()] for k, v in distinct.items()} if isinstance(distinct, dict) else distinct[rows]
    actions = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1])
    results = []
    for observation, shared in ((repeated, None), (distinct, rows)):
        policy = make(observation_name, "discrete", SPECS[spec_name], seed=3)
        evaluation = policy.evaluate_actions(obs_to_tensor(observation, space), actions, rows=shared)
        loss = evaluation["log_prob"].sum() + evaluation["entropy"].sum() + evaluation["aux_loss"]
        if "value" in evaluation:
            loss = loss + evaluation["value"].square().sum()
        loss.backward()
        results.append(
            (evaluation, {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None})
        )
    (plain, plain_grads), (shared_eval, shared_grads) = results
    for key in ("log_prob", "entropy", "value", "aux_loss"):
        if key in plain:
            torch.testing.assert_close(shared_eval[key], plain[key], rtol=1e-5, atol=1e-6)
    assert plain_grads.keys() == shared_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
