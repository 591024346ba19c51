"""Configuration dataclasses shared by every algorithm, and the machinery that turns them into ``--help``.

Each algorithm has one dataclass that extends :class:`RunConfig`. Every field carries its help text in
``metadata["help"]`` (written with :func:`option`), which the command line shows verbatim, and a field may list
its accepted values in ``metadata["choices"]``. Invalid values and invalid combinations are rejected in
``__post_init__`` with a message that says what to change.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value or combination that cannot work; the message says what to change."""


def option(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:  # noqa: A002 (argparse's word)
    """A dataclass field with its ``--help`` text (and accepted values) attached."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        accepted = ", ".join(repr(choice) for choice in choices)
        raise ConfigError(f"{name}={value!r} is not accepted; choose one of {accepted}")


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (bounds open where asked) and ``value`` is finite
    (an infinite rate or coefficient only fails later, as a non-finite loss)."""
    if value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above or value != value:  # value != value catches NaN
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ConfigError(f"{name}={value!r} is outside the accepted range {interval}")


@dataclass
class RunConfig:
    """What every training run needs, whatever the algorithm."""

    env_id: str = option("rlopt/GridGame-Empty-5x5-v0", "Gymnasium id of the environment to train on.")
    seed: int = option(0, "Random seed (torch, the environments' start states and evaluation seeds derive from it).")
    total_steps: int = option(100_000, "Environment steps to train for (every env step of every parallel env counts).")
    logdir: str = option("runs", "Folder under which the run folder <env>__<algo>__<seed>__<time>/ is created.")
    run_name: str | None = option(None, "Run folder name; default <env>__<algo>__<seed>__<time>.")
    device: str = option("auto", "Torch device: auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    eval_episodes: int = option(32, "Episodes (on held-out seeds) in each evaluation and in the final one.")
    eval_every: int = option(0, "Evaluate every this many env steps; 0 picks about ten evaluations per run.")
    eval_on_start: bool = option(
        False,
        "Also evaluate before the first update, at env step 0 (as transformers' eval_on_start): the curves of a run "
        "from --init then start at that model's score, and `rlopt report --success-gain` can measure from it.",
    )
    checkpoint_every: int = option(0, "Save a checkpoint every this many env steps; 0 saves at each evaluation.")
    progress: bool = option(True, "Show a progress bar on stderr.")
    eval_media: bool = option(
        True,
        "At each evaluation also play one rendered episode and log its last frame (grid, arm) or its completion "
        "(math) to TensorBoard; rlopt's own trainers only (SB3 runs log none).",
    )
    env_kwargs: dict = option({}, "Extra keyword arguments for gymnasium.make / make_vec (JSON on the command line).")

    def __post_init__(self) -> None:
        self._check_types()
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ConfigError("env_id must be a Gymnasium id such as rlopt/GridGame-Empty-5x5-v0 or CartPole-v1")
        if self.run_name is not None and (
            not self.run_name or self.run_name in (".", "..") or "/" in self.run_name or "\\" in self.run_name
        ):
            raise ConfigError(
                f"run_name={self.run_name!r} must be a plain folder name (no / or \\): the run folder is "
                "LOGDIR/RUN_NAME; choose the parent folder with --logdir"
            )
        check_range("seed", self.seed, 0)
        check_range("total_steps", self.total_steps, 0, low_open=True)
        check_range("eval_episodes", self.eval_episodes, 1)
        check_range("eval_every", self.eval_every, 0)
        check_range("checkpoint_every", self.checkpoint_every, 0)
        if not isinstance(self.env_kwargs, dict):
            raise ConfigError(f"env_kwargs must be a dict of keyword arguments, got {self.env_kwargs!r}")

    def _check_types(self) -> None:
        """Refuse a value of the wrong type for any field (``learning_rate="abc"`` from the API or an edited
        config.json), naming it, before a range check fails on it with a bare TypeError. A whole float for an int
        field (``total_steps=1e5``) becomes that int, and a list for a tuple field a tuple."""
        hints = typing.get_type_hints(type(self))
        for item in fields(self):
            value = getattr(self, item.name)
            kind, nullable = _field_kind(hints[item.name])
            if kind is None or (value is None and nullable):
                continue
            if kind is int and isinstance(value, float) and value.is_integer():
                setattr(self, item.name, int(value))
            elif kind in (int, float) and _is_kind(value, kind) and type(value) not in (int, float):
                setattr(self, item.name, kind(value))  # numpy scalars as Python numbers (config.json is JSON)
            elif kind is tuple and isinstance(value, list):
                setattr(self, item.name, tuple(value))
            elif not _is_kind(value, kind):
                wanted = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                          dict: "a JSON object", tuple: "a list"}[kind]  # fmt: skip
                raise ConfigError(f"{item.name}={value!r} must be {wanted}")

    @property
    def evaluation_interval(self) -> int:
        """Env steps between evaluations (derived when ``eval_every`` is 0)."""
        return self.eval_every if self.eval_every > 0 else max(1, self.total_steps // 10)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a dict, refusing unknown keys with the list of known ones."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
        converted = {}
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if isinstance(value, list) and _is_tuple_type(hints.get(key)):
                value = tuple(value)
            converted[key] = value
        return cls(**converted)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _field_kind(hint: Any) -> tuple[type | None, bool]:
    """``(kind, nullable)`` of a field's annotation: kind is int, float, str, bool, dict or tuple, or None for an
    annotation this check leaves alone."""
    nullable = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
        nullable = len(arguments) < len(typing.get_args(hint))
        if len(arguments) != 1:
            return None, nullable
        hint = arguments[0]
    origin = typing.get_origin(hint) or hint
    return (origin if origin in (int, float, str, bool, dict, tuple) else None), nullable


def _is_kind(value: Any, kind: type) -> bool:
    import numbers

    import numpy as np

    if kind is bool:
        return isinstance(value, (bool, np.bool_))
    if isinstance(value, (bool, np.bool_)):
        return False
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, kind)


def _is_tuple_type(hint: Any) -> bool:
    if hint is None:
        return False
    origin = typing.get_origin(hint)
    if origin is tuple:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple_type(arg) for arg in typing.get_args(hint))
    return False


@dataclass
class TransformerOptions:
    """Token-transformer and Mixture-of-Experts options, shared by every config that builds such a policy
    (GRPO and PPO through :class:`PolicyOptions`, and the supervised cold start)."""

    num_layers: int = option(2, "Transformer blocks (architecture=transformer).")
    num_heads: int = option(4, "Transformer attention heads; must divide model_dim.")
    model_dim: int = option(128, "Transformer width.")
    context_length: int = option(
        0,
        "Transformer positions; 0 = the observation length. Set it to the longest level you will train on "
        "(e.g. 160) to continue on harder math levels.",
    )
    temperature: float = option(1.0, "Sampling temperature of the transformer's token distribution.")
    top_p: float = option(1.0, "Nucleus (top-p) sampling of the transformer, in (0, 1].")
    num_experts: int = option(0, "Mixture-of-Experts experts in the policy (0 = dense).")
    top_k: int = option(2, "Mixture-of-Experts experts per input.")
    aux_loss_coef: float = option(0.01, "Weight of the MoE load-balancing loss.")
    precision: str = option(
        "fp32",
        "Compute precision of the transformer: fp32, or bf16 mixed precision (autocast: bf16 matrix products, "
        "attention and KV cache; fp32 weights, optimizer state, log-probabilities and losses). bf16 needs a CPU "
        "or a GPU with bfloat16 support, and is only faster where the hardware has fast bf16 (a CPU with "
        "AVX512-BF16 or AMX, an Ampere or newer GPU).",
        ("fp32", "bf16"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]  (RunConfig's, through the MRO)
        check_range("aux_loss_coef", self.aux_loss_coef, 0.0)
        check_choice("precision", self.precision, ("fp32", "bf16"))


# the options that only the token transformer reads (num_experts, top_k and precision apply to other networks too, or
# have their own check)
_TRANSFORMER_ONLY = ("num_layers", "num_heads", "model_dim", "context_length", "temperature", "top_p")


@dataclass
class PolicyOptions(TransformerOptions):
    """The policy-network options of rlopt's own trainers (GRPO, PPO); mixed into their configs."""

    hidden_sizes: tuple[int, ...] = option((64, 64), "Hidden layer sizes of the policy (and critic) MLP.")
    activation: str = option("tanh", "Activation of the networks.", ("tanh", "relu", "gelu"))
    architecture: str = option(
        "auto",
        "Network: auto (from the spaces: MLP, grid conv net, token-embedding MLP), mlp (every observation flattened "
        "as numbers, like SB3's MlpPolicy) or transformer (causal transformer with a KV cache, token envs).",
        ("auto", "mlp", "transformer"),
    )
    init: str | None = option(
        None,
        "Start from this checkpoint's policy weights, e.g. SFT; it brings its network, so network options that "
        "contradict it (--num-layers, --hidden-sizes, --architecture) are refused.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.policy_spec(value_head=False)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.architecture != "transformer" and not self.init:
            defaults = {item.name: item.default for item in dataclasses.fields(TransformerOptions)}
            ignored = [
                f"{name}={getattr(self, name)!r}" for name in _TRANSFORMER_ONLY if getattr(self, name) != defaults[name]
            ]
            if ignored:
                raise ConfigError(
                    f"{', '.join(ignored)} set the token transformer, but architecture={self.architecture!r} builds "
                    "another network that would ignore them; add --architecture transformer (or drop them)"
                )
        if self.precision != "fp32" and self.architecture == "mlp":
            raise ConfigError(
                f"precision={self.precision!r} applies to the token transformer only; use architecture=transformer "
                "(or an --init checkpoint of one), or precision=fp32 for the MLP"
            )

    def policy_spec(self, value_head: bool, shared_trunk: bool = False) -> Any:
        """The :class:`agents.PolicySpec` these options describe."""
        from agents import PolicySpec

        transformer = self.architecture == "transformer"
        return PolicySpec(
            hidden_sizes=tuple(self.hidden_sizes),
            activation=self.activation,
            value_head=value_head,
            shared_trunk=shared_trunk,
            num_experts=self.num_experts,
            top_k=self.top_k if self.num_experts else 2,
            architecture=self.architecture,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            model_dim=self.model_dim,
            context_length=self.context_length,
            temperature=self.temperature if transformer else 1.0,
            top_p=self.top_p if transformer else 1.0,
        )
