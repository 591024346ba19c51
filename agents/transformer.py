"""A small causal (GPT-style, pre-LayerNorm) transformer over token observations, with a KV cache for rollouts.

References: Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2: pre-LN blocks,
learned positions, residual projections initialised with std ``0.02 / sqrt(2 * layers)``); Holtzman et al. 2020,
"The Curious Case of Neural Text Degeneration" (nucleus / top-p sampling).

Observations are token buffers ``Box(0, V-1, (L,), int)``: the prompt, then the tokens generated so far, then PAD
(0). Rows are left-aligned, so a row's next position is its count of non-PAD tokens and a plain causal mask is
enough for a batch of prompts of different lengths: position ``i`` only ever sees columns ``0..i``, all real tokens.

:class:`TransformerPolicy` is the policy (same public methods as :class:`agents.policy.ActorCritic`) plus the
hooks the trainers use for sequence policies:

* ``initial_state`` / ``act_with_state``: incremental decoding. The first call for a row prefills its cache from
  the observation; later calls feed only the newest token and attend over the cached keys and values.
* ``evaluate_episodes``: one masked full-sequence forward that scores every generated token of a batch of episodes
  and, for PPO, gives the critic's value of every observation along them (``with_values=True``).

Where this departs from GPT-2:
1. The output layer is a separate ``policy_head`` over the action space (not tied to the token embedding), and a
   value head (PPO) reads the hidden state of the last token (of every observation along an episode, in
   ``evaluate_episodes``: the causal mask makes position ``i``'s hidden state that of the observation ending there).
2. ``temperature`` and ``top_p`` are part of the policy: every log-probability it reports, sampled or evaluated,
   is of the tempered, nucleus-renormalised distribution, so importance ratios start at exactly 1. When an action
   is evaluated, it is kept in the support even if it fell out of the nucleus since it was sampled (its
   log-probability stays finite and differentiable). Greedy decoding is the argmax of the raw logits.
3. With ``num_experts > 0`` every feed-forward block is a :class:`agents.moe.MoEFeedForward`, routed over the real
   (non-PAD) tokens only; the auxiliary loss and expert load are averaged over layers.
4. ``set_precision("bf16")`` computes in bfloat16 mixed precision (``torch.autocast``): the matrix products, the
   attention and the KV cache in bf16, while the weights (and so their gradients and the optimizer's state), the
   residual stream, the LayerNorms, the log-probabilities and everything returned stay fp32. On a CPU with
   AVX512-BF16 or AMX a bf16 matrix product runs about twice as fast; bf16 keeps fp32's exponent range, so no loss
   scaling is needed (Kalamkar et al. 2019, arXiv:1905.12322).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import Tensor, nn

from agents.encoders import box_kind, obs_to_tensor
from agents.moe import MoEFeedForward
from agents.policy import PolicySpec, _add_batch_axis, _is_single

__all__ = [
    "PAD",
    "PRECISIONS",
    "KVCache",
    "TokenTransformer",
    "TransformerConfig",
    "TransformerOutput",
    "TransformerPolicy",
    "sampling_log_probs",
    "token_lengths",
]

#: the padding token: it fills observation buffers after the last real token
PAD = 0
#: what :meth:`TransformerPolicy.set_precision` accepts: fp32, or bf16 mixed precision (autocast; fp32 weights)
PRECISIONS = ("fp32", "bf16")
#: at bf16 on a CPU, the rows of a decoding step and the packed tokens of an update are padded up to a multiple of
#: this many: oneDNN, which runs bf16 matrix products there, builds a kernel for every new shape (about 0.8 ms for
#: a 1296 x 128 x 512 product on the 2-core AMD EPYC, about as long as the product), and GRPO's ragged batches would
#: make a new shape almost every step: a run slowed down as it went, from 0.08 to 0.15 s a benchmark step
BF16_CPU_ROW_MULTIPLE = 32
#: decoding on a CPU attends with plain broadcasts instead of SDPA while the cached past is at most this many
#: positions
DECODE_ELEMENTWISE_MAX_WIDTH = 16
#: positions a fresh KV cache holds per row before it grows (see ``KVCache``)
CACHE_START_POSITIONS = 16
#: GRPO's episodes that share a prompt are scored in attention rows of at most this many generated slots: as many
#: whole episodes per row as fit (a divisor of the group size), each row reading its prompt's keys (see
#: ``_prompt_layout``)
GROUP_ROW_MAX_SLOTS = 32
#: on a CPU (without dropout), :meth:`CausalSelfAttention.extend` attends with batched matmuls instead of SDPA
EXTEND_MATMUL_ON_CPU = True
# GPT-2's initialisation scale for every linear and embedding weight.
INIT_STD = 0.02
#: on CUDA, a rollout's decoding steps replay a CUDA graph of one step over every row (see ``_DecodeGraph``) when
#: the KV cache at full context length takes at most this many bytes; larger caches decode eagerly
DECODE_GRAPH_MAX_CACHE_BYTES = 1 << 30
#: tests only: run the graph's all-rows step eagerly on a CPU too (the logic of ``_DecodeGraph`` without a capture)
DECODE_GRAPH_ON_CPU = False


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a :class:`TokenTransformer`.

    Attributes:
        vocab_size: ``V``, token ids ``0..V-1`` (PAD = 0 included).
        context_length: ``C``, the most positions a sequence may have.
        num_layers: transformer blocks.
        num_heads: attention heads; must divide ``model_dim``.
        model_dim: ``D``, width of the residual stream.
        dropout: dropout on attention weights and residual branches (0 for RL: log-probabilities must be exact).
        ffn_multiplier: hidden width of each feed-forward block is ``ffn_multiplier * D``.
        num_experts: 0 for dense feed-forward blocks, ``E > 0`` for Mixture-of-Experts blocks.
        top_k: experts per token when ``num_experts > 0``.
    """

    vocab_size: int
    context_length: int
    num_layers: int = 2
    num_heads: int = 4
    model_dim: int = 128
    dropout: float = 0.0
    ffn_multiplier: int = 4
    num_experts: int = 0
    top_k: int = 2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "num_layers", "num_heads", "model_dim", "ffn_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"TransformerConfig.{name}={value!r} must be a positive int")
        if self.model_dim % self.num_heads:
            raise ValueError(
                f"TransformerConfig.model_dim={self.model_dim} is not divisible by num_heads={self.num_heads}; "
                "choose model_dim as a multiple of num_heads"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransformerConfig.dropout={self.dropout!r} must be in [0, 1)")
        if self.num_experts < 0 or (self.num_experts and not 1 <= self.top_k <= self.num_experts):
            raise ValueError(
                f"TransformerConfig num_experts={self.num_experts}, top_k={self.top_k}: need num_experts >= 0 and "
                "1 <= top_k <= num_experts when num_experts > 0"
            )

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads


class TransformerOutput(NamedTuple):
    """What a full forward returns.

    Attributes:
        hidden: ``(B, S, D)`` final hidden states (after the last LayerNorm); ``(B, D)`` when one column per row
            was asked for (``read``).
        aux_loss: scalar MoE load-balancing loss averaged over layers (0 for dense blocks).
        expert_load: ``(E,)`` fraction of routing assignments per expert averaged over layers, None if dense.
        keys, values: per layer ``(B, H, S, D / H)`` when asked for (to fill a :class:`KVCache`), else None.
    """

    hidden: Tensor
    aux_loss: Tensor
    expert_load: Tensor | None
    keys: list[Tensor] | None
    values: list[Tensor] | None


@dataclass
class KVCache:
    """Keys and values of ``N`` sequences of up to ``C`` positions, and how many positions each holds.

    ``entries`` holds, per layer, an ``(N, C, 2, H, D / H)`` tensor: position ``c`` of row ``n`` keeps its key
    (``[n, c, 0]``) and value (``[n, c, 1]``) side by side, in the order the ``qkv`` projection makes them, so a
    decoding step writes both with one row copy per sequence and reads a row's past with one gather (about 10%
    faster a layer than separate ``(N, H, C, D / H)`` key and value tensors on a 2-core CPU).

    ``length[n] == 0`` means row ``n`` has not been prefilled yet. Entries at positions ``>= length[n]`` are stale
    and never attended to.

    ``C`` starts at :data:`CACHE_START_POSITIONS` (at most the context length) and :meth:`reserve` grows it, by
    doubling, when a sequence needs more: GRPO's episodes are often much shorter than the context, and a fresh
    rollout's cache is zero-filled memory (about 1 ms of a 37 ms math rollout of 256 rows at 32 positions).
    """

    entries: list[Tensor]
    length: Tensor  # (N,) int64
    # CUDA graphs of a decoding step over these entries (see ``_DecodeGraph``), by what they were captured with
    graphs: dict[tuple, _DecodeGraph] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_rows(self) -> int:
        return int(self.length.shape[0])

    @property
    def capacity(self) -> int:
        """``C``, the positions each row can hold now."""
        return int(self.entries[0].shape[1]) if self.entries else 0

    def reserve(self, width: int, limit: int) -> None:
        """Make room for ``width`` positions per row (``<= limit``, the context length): double ``C`` (capped at
        ``limit``) until it fits, keeping what is cached; new positions are zeros."""
        capacity = self.capacity
        if width <= capacity:
            return
        if width > limit:
            raise ValueError(f"a sequence of {width} positions exceeds the context length {limit}")
        grown = min(limit, max(width, 2 * capacity))
        self.graphs.clear()  # they write to and read from the entries being replaced
        for layer, entries in enumerate(self.entries):
            fresh = entries.new_zeros((entries.shape[0], grown, *entries.shape[2:]))
            fresh[:, :capacity] = entries
            self.entries[layer] = fresh

    @property
    def keys(self) -> list[Tensor]:
        """Per layer ``(N, H, C, D / H)`` views of the keys."""
        return [entries[:, :, 0].transpose(1, 2) for entries in self.entries]

    @property
    def values(self) -> list[Tensor]:
        """Per layer ``(N, H, C, D / H)`` views of the values."""
        return [entries[:, :, 1].transpose(1, 2) for entries in self.entries]


class PackedLayout(NamedTuple):
    """Where ``K`` packed tokens sit in an ``(M, S)`` grid of ``M`` rows of up to ``S`` new tokens each.

    Rows of new tokens are ragged; the feed-forward and projection layers run on the ``K`` real tokens only (no
    compute on padding) and attention unpacks them into the grid. Each row's real tokens are a prefix of its row.

    Attributes:
        index: ``(K,)`` flat grid slot ``m * S + s`` of each packed token (distinct slots, in any order).
        shape: ``(M, S)``.
        visible: ``(M, 1, S, P + S)`` bool: what a grid slot may attend to, ``P`` past columns then the ``S`` new.

    A grid row need not be one sequence: several sequences that continue the same past can share a row (GRPO's
    group of episodes after their common prompt), each in its own block of slots, ``visible`` keeping each to its
    own block.
    """

    index: Tensor
    shape: tuple[int, int]
    visible: Tensor


class _Episodes(NamedTuple):
    """A checked batch of ``M`` whole episodes of up to ``T`` generated tokens (see ``evaluate_episodes``).

    Attributes:
        prompts: ``(M, L)`` long first observations; prompt_lengths: ``(M,)`` their real tokens.
        actions: ``(M, T)`` long generated tokens; mask: ``(M, T)`` bool, a prefix of each row.
        generated: ``(M,)`` steps per episode; total: ``(M,)`` prompt plus generated tokens.
        width: the longest ``total`` (at least 1): the columns of a whole-episode forward.
    """

    prompts: Tensor
    prompt_lengths: Tensor
    actions: Tensor
    mask: Tensor
    generated: Tensor
    total: Tensor
    width: int


# --- helpers ------------------------------------------------------------------------------------------------------


def token_lengths(tokens: Tensor) -> Tensor:
    """Number of real (non-PAD) tokens per row ``(B,)`` of left-aligned token rows ``(B, L)``.

    Raises:
        ValueError: a row with no token at all, or with a PAD before a real token (rows must be left-aligned).
    """
    real = tokens != PAD
    lengths = real.sum(dim=1)
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    aligned = real == (positions < lengths[:, None])
    if not bool(aligned.all()):
        row = int(torch.nonzero(~aligned.all(dim=1))[0, 0])
        raise ValueError(
            f"token row {row} has PAD (0) before a real token: {tokens[row].tolist()}; rows must be left-aligned "
            "(prompt, generated tokens, then PAD only)"
        )
    if tokens.shape[0] and int(lengths.min()) < 1:
        row = int(torch.nonzero(lengths == 0)[0, 0])
        raise ValueError(f"token row {row} is empty (all PAD); a transformer policy needs at least one prompt token")
    return lengths


@functools.lru_cache(maxsize=64)
def _row_hash_weights(width: int, device: torch.device) -> Tensor:
    """``(width,)`` fixed pseudo-random int64 multipliers of :func:`_distinct_rows`' hash (made once per width and
    device: it is called on every rollout and update)."""
    generator = torch.Generator().manual_seed(width)
    return torch.randint(1, 2**62, (width,), generator=generator, dtype=torch.long).to(device)


def _distinct_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """``(distinct rows (U, W), row of each input row (B,))`` of an integer ``(B, W)`` tensor, like
    ``torch.unique(rows, dim=0, return_inverse=True)`` but with the distinct rows in no particular order.

    Rows are told apart by a 64-bit multiplicative hash (a 1-D unique), and the result is checked exactly
    (``unique[inverse] == rows``); on a collision it falls back to ``torch.unique(dim=0)``, which is 10 times slower
    on a GRPO batch of 256 prompts (0.3 ms against 0.03 ms on a 2-core CPU, called once per rollout and per update).
    """
    count, width = rows.shape
    keys = (rows.long() * _row_hash_weights(width, rows.device)).sum(dim=1)  # int64 products wrap: still a hash
    distinct_keys, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((distinct_keys.shape[0],), count, dtype=torch.long, device=rows.device)
    first.scatter_reduce_(0, inverse, torch.arange(count, device=rows.device), "amin")
    unique = rows[first]
    if torch.equal(unique[inverse], rows):
        return unique, inverse
    return torch.unique(rows, dim=0, return_inverse=True)


def _shared_prompts(prompts: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(distinct prompt rows (U, W), row of each prompt (M,))`` when prompts repeat enough to be worth running
    once each (each distinct prompt used twice on average, as GRPO's groups of ``G >= 2`` are), else None.

    ``W`` is the longest prompt; rows are compared token by token, PAD included, so equal rows are equal prompts.
    """
    width = int(lengths.max())
    unique, inverse = _distinct_rows(prompts[:, :width])
    if 2 * unique.shape[0] > prompts.shape[0]:
        return None
    return unique, inverse


def _episodes_per_row(group_size: int, width: int) -> int:
    """The most episodes of ``width`` slots each that share an attention row: the largest divisor of
    ``group_size`` whose episodes fill at most :data:`GROUP_ROW_MAX_SLOTS` slots (at least 1)."""
    divisors = [count for count in range(1, group_size + 1) if group_size % count == 0]
    return max(count for count in divisors if count == 1 or count * width <= GROUP_ROW_MAX_SLOTS)


def _prompt_layout(index: Tensor, inverse: Tensor, unique: Tensor, width: int) -> tuple[PackedLayout, Tensor | int]:
    """How ``M`` episodes that continue ``U`` distinct prompts attend: the layout of their packed tokens, and which
    prompt's keys each attention row reads.

    ``unique`` ``(U, W)`` are the prompts, ``inverse`` ``(M,)`` names each episode's, ``index`` ``(K,)`` holds its
    packed tokens' slots ``m * S + t`` in the ``(M, S)`` grid, ``S = width``. Two layouts, both exact:

    * every prompt has ``G`` episodes (GRPO's groups, in any order): the episodes are ordered by prompt and ``E``
      of them share a row of ``E * S`` slots (``E``: :func:`_episodes_per_row`), each a block of ``S`` slots that
      sees its prompt and its own block up to itself. A group fills ``G / E`` rows, which read its prompt's keys
      repeated ``G / E`` times (returned as that int; 1: the keys as they are). The gradient of a repeat is a sum,
      not a scatter. Rows of at most 32 slots because SDPA's CPU kernel takes queries in blocks of 32: on a 2-core
      CPU, SDPA's forward and backward over one layer of 32 prompts x 8 episodes x 7 slots (synthetic masks) took
      about 6 ms in rows of 8 episodes (56 slots) and about 3.3 ms in rows of 4 (28 slots). In place, rows of 2
      and of 1 episode were slower than rows of 4 (per-row overhead); see docs/design-notes.md.
    * otherwise: one row per episode in its own order, reading a gathered copy (returned ``inverse``).
    """
    count, groups = inverse.shape[0], unique.shape[0]
    device = inverse.device
    size = count // groups
    prompt_lengths = (unique != PAD).sum(dim=1)
    uniform = size * groups == count and bool((torch.bincount(inverse, minlength=groups) == size).all())
    if uniform:
        order = torch.argsort(inverse, stable=True)  # by prompt: group u's episodes take ranks u * G .. u * G + G - 1
        rank = torch.empty_like(order)
        rank[order] = torch.arange(count, device=device)
        # episode m's step t goes to slot rank[m] * S + t: block rank[m] % E of row rank[m] // E of the
        # (M / E, E * S) grid
        index = (rank[:, None] * width + torch.arange(width, device=device)).reshape(-1)[index]
        per_row = _episodes_per_row(size, width)
        rows, slots = count // per_row, per_row * width
        past: Tensor | int = size // per_row
        row_prompt_lengths = prompt_lengths.repeat_interleave(past) if past > 1 else prompt_lengths
    else:
        rows, slots = count, width
        past, row_prompt_lengths = inverse, prompt_lengths[inverse]
    block = torch.arange(slots, device=device)
    own = (block[None, :] // width == block[:, None] // width) & (block[None, :] <= block[:, None])  # (slots, slots)
    prompt_width = unique.shape[1]
    seen = torch.arange(prompt_width, device=device) < row_prompt_lengths[:, None]  # (rows, W)
    visible = torch.cat((seen[:, None, :].expand(rows, slots, prompt_width), own.expand(rows, -1, -1)), dim=2)
    return PackedLayout(index, (rows, slots), visible[:, None]), past


def _past_rows(prompt_tensor: Tensor, past: Tensor | int) -> Tensor:
    """A prompt-level keys or values tensor ``(U, ...)`` as the attention rows of :func:`_prompt_layout` read it."""
    if isinstance(past, Tensor):
        return prompt_tensor.index_select(0, past)
    if past == 1:
        return prompt_tensor
    return prompt_tensor.repeat_interleave(past, dim=0)


def sampling_log_probs(
    logits: Tensor, temperature: float = 1.0, top_p: float = 1.0, keep: Tensor | None = None
) -> Tensor:
    """Log-probabilities ``(..., A)`` of the tempered, nucleus-truncated distribution over ``logits`` ``(..., A)``.

    The nucleus is the smallest set of most likely tokens whose probability (after temperature) reaches ``top_p``;
    tokens outside it get ``-inf``. ``keep`` ``(...)`` names one token per row that stays in the support anyway
    (an action being evaluated), so its log-probability is finite.
    """
    logits = logits.float()  # fp32 whatever the precision the logits were computed in (a no-op on fp32)
    scaled = logits / temperature if temperature != 1.0 else logits
    if top_p < 1.0:
        with torch.no_grad():
            sorted_logits, order = scaled.sort(dim=-1, descending=True)
            sorted_probs = sorted_logits.softmax(dim=-1)
            # drop a token when the tokens ranked above it already hold top_p of the mass (the top one never goes)
            drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            if keep is not None:
                drop.scatter_(-1, keep.long().unsqueeze(-1), False)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled.log_softmax(dim=-1)


def _entropy(log_probs: Tensor) -> Tensor:
    """Entropy ``(...)`` of distributions given as log-probabilities ``(..., A)`` (``-inf`` entries allowed)."""
    probs = log_probs.exp()
    # zero the -inf entries before the product, not after: torch.where after it would pass 0 * inf = NaN back
    # into the gradient (with top_p < 1 and an entropy bonus that NaN reached the weights)
    return -(probs * torch.where(probs > 0, log_probs, 0.0)).sum(dim=-1)


# --- the network --------------------------------------------------------------------------------------------------


def _attention(query: Tensor, key: Tensor, value: Tensor, **options: Any) -> Tensor:
    """``F.scaled_dot_product_attention``, except that on a CPU bf16 inputs are attended in fp32 and the result cast
    back: PyTorch's CPU kernel is slow in bf16 (2.13, AMD EPYC: its backward over an SFT batch of 64 x 21 tokens
    took 13.5 ms a layer, most of a bf16 SFT step, where the fp32 kernel takes about 1 ms)."""
    if query.device.type == "cpu" and query.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):  # autocast would cast the fp32 inputs straight back to bf16
            out = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), **options)
        return out.to(torch.bfloat16)
    return F.scaled_dot_product_attention(query, key, value, **options)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a full-sequence path and a one-token cached path."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.qkv = nn.Linear(config.model_dim, 3 * config.model_dim)
        self.proj = nn.Linear(config.model_dim, config.model_dim)
        self.dropout = config.dropout

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, S, D)`` -> queries, keys, values ``(B, H, S, D / H)`` each."""
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return query, key, value

    def _merge(self, x: Tensor) -> Tensor:
        """``(B, H, S, D / H)`` -> projected ``(B, S, D)``."""
        batch, _, length, _ = x.shape
        return self.proj(x.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Full causal pass over ``(B, S, D)``; returns the output ``(B, S, D)`` and this layer's keys and values."""
        query, key, value = self._heads(x)
        dropout = self.dropout if self.training else 0.0
        out = _attention(query, key, value, is_causal=True, dropout_p=dropout)
        return self._merge(out), key, value

    def forward_read(self, x: Tensor, read: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Full causal pass over ``(B, S, D)`` whose output is wanted at one column per row only, ``read`` ``(B,)``:
        returns that output ``(B, D)`` and this layer's keys and values of every position (for a cache)."""
        query, key, value = self._heads(x)
        batch, length = x.shape[0], x.shape[1]
        rows = torch.arange(batch, device=x.device)
        chosen = query[rows, :, read][:, :, None]  # (B, H, 1, D / H)
        visible = torch.arange(length, device=x.device) <= read[:, None]  # (B, S): causal for the read column
        dropout = self.dropout if self.training else 0.0
        out = _attention(chosen, key, value, attn_mask=visible[:, None, None], dropout_p=dropout)
        return self.proj(out.reshape(batch, self.num_heads * self.head_dim)), key, value

    def extend(self, x: Tensor, layout: PackedLayout, past_keys: Tensor, past_values: Tensor) -> Tensor:
        """Continue ``M`` sequences by new tokens given packed, ``x`` ``(K, D)`` (see :class:`PackedLayout`): each
        attends over its row's ``P`` past keys and values ``(M, H, P, D / H)`` (as ``layout.visible`` allows) and
        over its row's new tokens up to itself. Returns the output ``(K, D)``, packed likewise.

        Only the attention itself runs on the padded ``(M, S)`` grid; the projections run on the ``K`` real tokens.
        """
        count, width = layout.shape
        model_dim = self.num_heads * self.head_dim
        qkv = self.qkv(x)
        # padding slots hold zeros: they come after every real token of their row, so no real token attends to them
        # (scattered in place into fresh zeros: an out-of-place index_copy would copy the zeros first)
        grid = torch.zeros((count * width, 3 * model_dim), dtype=qkv.dtype, device=qkv.device)
        grid.index_copy_(0, layout.index, qkv)
        query, key, value = grid.view(count, width, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        keys = torch.cat((past_keys, key), dim=2)
        values = torch.cat((past_values, value), dim=2)
        dropout = self.dropout if self.training else 0.0
        if x.device.type == "cpu" and EXTEND_MATMUL_ON_CPU and dropout == 0.0:
            # on a CPU, SDPA's flash kernel is overhead-bound on these short rows (tens of slots and keys, a few
            # heads); two batched matmuls and a softmax over an additive mask do the same: forward and backward of
            # one layer of the math benchmark's update (64 rows x 4 heads x 28 slots x 33 keys) 4.5 ms -> 3.3 ms
            bias = torch.zeros(layout.visible.shape, dtype=query.dtype, device=x.device)
            bias.masked_fill_(~layout.visible, float("-inf"))  # every slot sees itself: no row is all -inf
            scores = torch.matmul(query, keys.transpose(-1, -2)).mul_(self.head_dim**-0.5).add_(bias)
            out = torch.matmul(scores.softmax(dim=-1), values)
        else:
            out = _attention(query, keys, values, attn_mask=layout.visible, dropout_p=dropout)
        return self.proj(out.transpose(1, 2).reshape(count * width, model_dim).index_select(0, layout.index))

    def step(self, x: Tensor, entries: Tensor, rows: Tensor | None, positions: Tensor, width: int) -> Tensor:
        """One new token per row: ``x`` ``(R, 1, D)`` at ``positions`` ``(R,)``; its key and value are written into
        the cache ``entries`` ``(N, C, 2, H, D / H)`` (see :class:`KVCache`) at rows ``rows`` (``None`` = all ``N``
        rows, in order), then it attends over the cached positions ``0..positions``. ``width`` is
        ``max(positions) + 1``."""
        count, model_dim = x.shape[0], self.num_heads * self.head_dim
        qkv = self.qkv(x).view(count, 3 * model_dim)
        query = qkv[:, :model_dim].view(count, self.num_heads, self.head_dim)
        num_rows, capacity = entries.shape[:2]
        cache_rows = torch.arange(num_rows, device=x.device) if rows is None else rows
        # key and value of row r at position p are row r * C + p of the flattened cache: one copy each
        entries.view(num_rows * capacity, 2 * model_dim).index_copy_(
            0, cache_rows * capacity + positions, qkv[:, model_dim:].to(entries.dtype)
        )
        # every row in order: a view, no gather; else index_select copies the rows' (W, 2, H, D / H) blocks
        past = entries[:, :width] if rows is None else entries[:, :width].index_select(0, rows)
        visible = torch.arange(width, device=x.device) <= positions[:, None]  # (R, W)
        if width <= DECODE_ELEMENTWISE_MAX_WIDTH and x.device.type == "cpu":
            # on a CPU a one-token query over a short past is overhead-bound in SDPA (~0.5 us per row and head);
            # plain broadcasts do the R x W x H dot products with a few large ops: ~30% faster up to W = 14, slower
            # at 20 (on a GPU they would be several kernel launches instead of one)
            scores = (past[:, :, 0] * query[:, None]).sum(dim=-1).mul_(self.head_dim**-0.5)  # (R, W, H)
            weights = scores.masked_fill_(~visible[:, :, None], float("-inf")).softmax(dim=1)
            out = (weights[..., None] * past[:, :, 1]).sum(dim=1)  # (R, H, D / H)
            return self.proj(out.reshape(count, 1, model_dim))
        out = _attention(
            query[:, :, None],
            past[:, :, 0].transpose(1, 2),
            past[:, :, 1].transpose(1, 2),
            attn_mask=visible[:, None, None, :],
        )
        return self._merge(out)


class FeedForward(nn.Module):
    """Position-wise ``Linear -> GELU -> Linear``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        hidden = config.ffn_multiplier * config.model_dim
        self.fc = nn.Linear(config.model_dim, hidden)
        self.proj = nn.Linear(hidden, config.model_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attention(LN(x))``, then ``x + feed_forward(LN(x))``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.model_dim)
        self.attention = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.model_dim)
        self.feed_forward: nn.Module
        if config.num_experts:
            hidden = config.ffn_multiplier * config.model_dim
            self.feed_forward = MoEFeedForward(
                config.model_dim, config.model_dim, hidden, config.num_experts, config.top_k, "gelu"
            )
        else:
            self.feed_forward = FeedForward(config)
        self.dropout = nn.Dropout(config.dropout)

    def _feed_forward(self, x: Tensor, token_mask: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(B, S, D)`` -> ``(B, S, D)``, plus MoE aux loss and expert load (routed over ``token_mask`` only)."""
        if not isinstance(self.feed_forward, MoEFeedForward):
            return self.feed_forward(x), None, None
        flat = x.reshape(-1, x.shape[-1])
        if token_mask is None:
            routed = self.feed_forward(flat)
            return routed.output.view_as(x), routed.aux_loss, routed.expert_load
        index = torch.nonzero(token_mask.reshape(-1)).squeeze(1)
        routed = self.feed_forward(flat[index])
        out = torch.zeros_like(flat).index_put((index,), routed.output)
        return out.view_as(x), routed.aux_loss, routed.expert_load

    def forward(
        self, x: Tensor, token_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        """Full pass: ``(B, S, D)`` -> ``(x, keys, values, aux_loss, expert_load)``."""
        attended, key, value = self.attention(self.ln_1(x))
        x = x + self.dropout(attended)
        fed, aux_loss, expert_load = self._feed_forward(self.ln_2(x), token_mask)
        return x + self.dropout(fed), key, value, aux_loss, expert_load

    def forward_read(self, x: Tensor, read: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Full pass wanted at one column per row, ``read`` ``(B,)`` (dense blocks only): ``(B, S, D)`` ->
        ``(x (B, D) at those columns, keys, values)``. The keys and values cover every position; the attention's
        output, the projection and the feed-forward run on the read columns only."""
        attended, key, value = self.attention.forward_read(self.ln_1(x), read)
        x = x[torch.arange(x.shape[0], device=x.device), read] + self.dropout(attended)
        fed, _, _ = self._feed_forward(self.ln_2(x), None)
        return x + self.dropout(fed), key, value

    def extend(self, x: Tensor, layout: PackedLayout, past_keys: Tensor, past_values: Tensor) -> Tensor:
        """Pass over packed new tokens ``(K, D)`` -> ``(K, D)`` that continue given past keys and values (dense
        blocks only); see :meth:`CausalSelfAttention.extend`."""
        x = x + self.dropout(self.attention.extend(self.ln_1(x), layout, past_keys, past_values))
        fed, _, _ = self._feed_forward(self.ln_2(x), None)
        return x + self.dropout(fed)

    def step(self, x: Tensor, entries: Tensor, rows: Tensor | None, positions: Tensor, width: int) -> Tensor:
        """Cached pass for one new token per row, ``(R, 1, D)`` -> ``(R, 1, D)``."""
        x = x + self.attention.step(self.ln_1(x), entries, rows, positions, width)
        fed, _, _ = self._feed_forward(self.ln_2(x), None)
        return x + fed


class TokenTransformer(nn.Module):
    """Token and position embeddings, ``num_layers`` pre-LN blocks and a final LayerNorm.

    Maps token ids ``(B, S)`` to hidden states ``(B, S, D)``; the heads live in :class:`TransformerPolicy`.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.model_dim)
        self.position_embedding = nn.Embedding(config.context_length, config.model_dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.model_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.apply(_init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight"):  # the residual branches' last layers (GPT-2)
                nn.init.normal_(parameter, std=INIT_STD / math.sqrt(2 * config.num_layers))

    def empty_cache(self, num_rows: int, device: torch.device | str, dtype: torch.dtype | None = None) -> KVCache:
        """A zeroed :class:`KVCache` for ``num_rows`` sequences of up to ``context_length`` positions (it starts
        with room for :data:`CACHE_START_POSITIONS` and grows as needed), in ``dtype`` (default: the weights')."""
        config = self.config
        dtype = dtype or self.token_embedding.weight.dtype
        capacity = min(config.context_length, CACHE_START_POSITIONS)
        shape = (num_rows, capacity, 2, config.num_heads, config.head_dim)
        return KVCache(
            # zeros, not empty: a stale entry is read (and weighted 0) by attention, and 0 * NaN would be NaN
            entries=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)],
            length=torch.zeros(num_rows, device=device, dtype=torch.long),
        )

    def forward(
        self,
        tokens: Tensor,
        token_mask: Tensor | None = None,
        return_cache: bool = False,
        read: Tensor | None = None,
    ) -> TransformerOutput:
        """Full causal pass.

        Args:
            tokens: ``(B, S)`` ids, ``S <= context_length``; row ``b`` holds its tokens at positions ``0..S-1``.
            token_mask: ``(B, S)`` True at real tokens: MoE blocks route only those (ignored by dense blocks).
            return_cache: also return every layer's keys and values (to prefill a :class:`KVCache`).
            read: ``(B,)`` one column per row: ``hidden`` is then ``(B, D)``, the hidden states of those columns
                only. Dense blocks then skip the last block's attention output and feed-forward at every other
                column (nothing reads them: later columns' keys and values come from the block's input); a prompt
                of 5 tokens saves 4/5 of that block's work after its keys and values.
        """
        length = tokens.shape[1]
        if length > self.config.context_length:
            raise ValueError(
                f"a sequence of {length} tokens exceeds the transformer's context_length="
                f"{self.config.context_length}; build the policy with a larger context_length"
            )
        positions = torch.arange(length, device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        keys, values, aux_losses, loads = [], [], [], []
        last = len(self.blocks) - 1
        for layer, block in enumerate(self.blocks):
            if read is not None and layer == last and not self.config.num_experts:
                x, key, value = block.forward_read(x, read)
                aux_loss = load = None
            else:
                x, key, value, aux_loss, load = block(x, token_mask)
            if return_cache:
                keys.append(key)
                values.append(value)
            if aux_loss is not None:
                aux_losses.append(aux_loss)
                loads.append(load)
        aux = torch.stack(aux_losses).mean() if aux_losses else torch.zeros((), device=x.device, dtype=x.dtype)
        expert_load = torch.stack(loads).mean(dim=0) if loads else None
        if read is not None and x.dim() == 3:  # MoE blocks ran every column
            x = x[torch.arange(x.shape[0], device=x.device), read]
        return TransformerOutput(
            self.ln_f(x), aux, expert_load, keys if return_cache else None, values if return_cache else None
        )

    def extend(
        self,
        tokens: Tensor,
        positions: Tensor,
        layout: PackedLayout,
        past_keys: list[Tensor],
        past_values: list[Tensor],
    ) -> Tensor:
        """Hidden states ``(K, D)`` of new tokens that continue sequences whose keys and values are given (a prefix
        computed once and shared by several rows). Dense blocks only: MoE routing statistics would count a shared
        prefix once instead of once per row.

        Args:
            tokens: ``(K,)`` ids of the new tokens, packed (see :class:`PackedLayout`).
            positions: ``(K,)`` their positions in their sequences (< ``context_length``).
            layout: where each packed token sits in the ``(M, S)`` grid, and what each may attend to.
            past_keys, past_values: per layer ``(M, H, P, D / H)``.
        """
        if self.config.num_experts:
            raise ValueError("TokenTransformer.extend supports dense blocks only (num_experts=0); use forward")
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for block, keys, values in zip(self.blocks, past_keys, past_values, strict=True):
            x = block.extend(x, layout, keys, values)
        return self.ln_f(x)

    def step(self, tokens: Tensor, positions: Tensor, cache: KVCache, rows: Tensor | None, width: int) -> Tensor:
        """One new token per row: ids ``(R,)`` at ``positions`` ``(R,)`` for cache rows ``rows`` (None = all, in
        order). Writes their keys and values into ``cache`` and returns their hidden states ``(R, D)``."""
        cache.reserve(width, self.config.context_length)
        x = (self.token_embedding(tokens) + self.position_embedding(positions))[:, None, :]
        for block, entries in zip(self.blocks, cache.entries, strict=True):
            x = block.step(x, entries, rows, positions, width)
        return self.ln_f(x)[:, 0]


@functools.cache
def _capture_stream(device: torch.device) -> Any:
    """A side stream of ``device`` for recording CUDA graphs (capture cannot run on the default stream)."""
    return torch.cuda.Stream(device)


class _DecodeGraph:
    """One decoding step over every row of a KV cache, recorded once as a CUDA graph and replayed at each step.

    A step is a few dozen small kernels per layer. On a GPU, launching them one by one from Python costs far more
    than running them: in ``scripts/bench_math.py --torch-profile`` on an H200, the device was busy 3.7 ms of a
    step that took 47-57 ms unprofiled. A replay launches the whole step at once (PyTorch's "CUDA Graphs" notes describe
    the mechanism and its rules).

    A graph has fixed shapes and addresses, so it steps EVERY row of the cache, attending over the full context:
    - a row not being decoded writes a key and value into the slot just past its cached length. That slot is never
      attended to, and the row's next token overwrites it before it is read. Its outputs are dropped.
    - the cache is grown to the full context length before the graph is made and stays put after (``reserve``
      then never reallocates); the graph lives in the cache's ``graphs``, so it goes when the cache goes.
    - the first step runs eagerly and only then is the step recorded: libraries set up on first use, and must not
      do so inside a capture.

    ``capture=False`` runs the same all-rows step eagerly every time (the tests check its logic on a CPU).
    """

    def __init__(self, policy: TransformerPolicy, state: KVCache, deterministic: bool, capture: bool = True) -> None:
        # the same tensors in a cache object of its own: the state keeps this graph, and a cycle between them would
        # hold their GPU memory until Python's cycle collector ran
        self.state = KVCache(list(state.entries), state.length)
        self.policy, self.deterministic, self.capture = policy, deterministic, capture
        self.tokens = torch.zeros_like(state.length)
        self.positions = torch.zeros_like(state.length)
        self.graph: Any = None
        self.actions: Tensor | None = None
        self.log_probs: Tensor | None = None

    def _step(self) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            hidden = self.policy.transformer.step(self.tokens, self.positions, self.state, None, self.state.capacity)
            return self.policy._choose(self.policy.policy_head(hidden), self.deterministic)

    def _record(self) -> None:
        """Record the step (recorded, not run: the cache is written by replays only). ``torch.cuda.graph`` would
        also empty the allocator's cache at each capture, and a graph is made per rollout: the update's memory
        would then be allocated afresh every iteration. So the capture is begun and ended here, on a side stream
        as capture requires."""
        device = self.state.length.device
        current = torch.cuda.current_stream(device)
        stream = _capture_stream(device)
        stream.wait_stream(current)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            graph.capture_begin()
            try:
                self.actions, self.log_probs = self._step()
            finally:
                graph.capture_end()
        current.wait_stream(stream)
        self.graph = graph

    def run(self, newest: Tensor, rows: Tensor, in_order: bool) -> tuple[Tensor, Tensor]:
        """Decode the newest tokens ``(R,)`` of cache rows ``rows`` ``(R,)``, each at its cached length; returns
        ``(actions (R,), log_probs (R,))``. The caller then sets those rows' lengths."""
        # a decoded row's token goes at its cached length; every other row writes the unread slot past its own
        self.positions.copy_(self.state.length)
        if in_order:
            self.tokens.copy_(newest)
        else:
            self.tokens.zero_().index_copy_(0, rows, newest)
        if self.graph is not None:
            self.graph.replay()
            actions, log_probs = self.actions, self.log_probs
            assert actions is not None and log_probs is not None
        else:
            actions, log_probs = self._step()
            if self.capture:
                self._record()
        # a replay overwrites its outputs in place: hand out copies
        if in_order:
            return actions.clone(), log_probs.clone()
        return actions.index_select(0, rows), log_probs.index_select(0, rows)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# --- the policy ---------------------------------------------------------------------------------------------------


class _HeadLinear(nn.Linear):
    """A policy or value head: a linear layer that stays fp32 under autocast. Its outputs are what the losses read
    (logits, values), and bf16 logits would put about 0.01 of rounding into every log-probability; the head is
    ``D x A`` (128 x 24 for math), so fp32 costs nothing measurable."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def _in_precision(method: Any) -> Any:
    """Run a :class:`TransformerPolicy` method under the policy's precision: bf16 autocast on its device, or as is
    (fp32). Autocast casts at the matrix products; the methods return fp32."""

    @functools.wraps(method)
    def wrapped(self: TransformerPolicy, *args: Any, **kwargs: Any) -> Any:
        if self.precision == "fp32":
            return method(self, *args, **kwargs)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            return method(self, *args, **kwargs)

    return wrapped


class TransformerPolicy(nn.Module):
    """Causal transformer policy over token observations (``PolicySpec(architecture="transformer")``).

    Args:
        spec: the architecture (``num_layers``, ``num_heads``, ``model_dim``, ``context_length``, ``temperature``,
            ``top_p``, ``value_head``, ``shared_trunk``, ``num_experts``, ``top_k``; the MLP / conv fields
            ``hidden_sizes``, ``activation``, ``embedding_dim``, ``conv_channels``, ``orthogonal_init`` and
            ``log_std_init`` do not apply).
        observation_space: ``Box(0, V-1, (L,), integer)`` token buffers.
        action_space: ``Discrete(A)`` with ``start=0`` and ``A <= V`` (an action is the next token).

    Parameter names: ``transformer.*``, ``policy_head.*``; a critic adds ``value_head.*`` and, without
    ``shared_trunk``, a separate dense ``critic.*`` transformer. Actor weights load into an actor-critic with
    ``load_state_dict(..., strict=False)``.

    Attributes:
        has_value: whether the policy has a critic.
        is_moe: whether the feed-forward blocks are Mixture-of-Experts layers.
        cuda_graphs: opt-in, on the class or an instance: on CUDA, ``act_with_state`` then replays a CUDA graph
            for each decoding step of a dense policy (see ``_DecodeGraph``). Off by default until it has run on a
            GPU: it is tested on a CPU through the graph's logic, and the capture itself by a ``gpu`` test.
        precision: "fp32" (default) or "bf16" mixed precision; change it with :meth:`set_precision`. A run-time
            choice, not part of the architecture: checkpoints do not record it.
    """

    cuda_graphs: bool = False
    precision: str = "fp32"

    def __init__(self, spec: PolicySpec, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        super().__init__()
        if not (isinstance(observation_space, spaces.Box) and box_kind(observation_space) == "tokens"):
            raise TypeError(
                f"architecture='transformer' needs a 1-D integer token observation space Box(0, V-1, (L,)), got "
                f"{observation_space}; use architecture='auto' for other spaces"
            )
        vocab_size = int(observation_space.high.max()) + 1
        if not isinstance(action_space, spaces.Discrete) or int(action_space.start) != 0 or action_space.n > vocab_size:
            raise TypeError(
                f"architecture='transformer' needs Discrete(A) actions with start=0 and A <= {vocab_size} (each action "
                f"is the next token), got {action_space}"
            )
        (observation_length,) = observation_space.shape
        context_length = spec.context_length or observation_length
        if observation_length > context_length:
            raise ValueError(
                f"observations of {observation_length} tokens do not fit context_length={spec.context_length}; set "
                f"context_length >= {observation_length} (or 0 for the observation length)"
            )
        self.spec = spec
        self.observation_space = observation_space
        self.action_space = action_space
        self.has_value = spec.value_head
        self.is_moe = spec.num_experts > 0
        self.temperature, self.top_p = spec.temperature, spec.top_p
        self.config = TransformerConfig(
            vocab_size=vocab_size,
            context_length=context_length,
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            model_dim=spec.model_dim,
            num_experts=spec.num_experts,
            top_k=spec.top_k,
        )
        self.transformer = TokenTransformer(self.config)
        self.policy_head = _HeadLinear(spec.model_dim, int(action_space.n))
        _init_weights(self.policy_head)
        if self.has_value and not spec.shared_trunk:
            # a separate critic is dense, as in ActorCritic: MoE is a policy-side choice
            self.critic = TokenTransformer(
                TransformerConfig(
                    vocab_size=vocab_size,
                    context_length=context_length,
                    num_layers=spec.num_layers,
                    num_heads=spec.num_heads,
                    model_dim=spec.model_dim,
                )
            )
        if self.has_value:
            self.value_head = _HeadLinear(spec.model_dim, 1)
            nn.init.normal_(self.value_head.weight, std=INIT_STD)
            nn.init.zeros_(self.value_head.bias)

    # --- helpers ---

    @property
    def device(self) -> torch.device:
        return self.policy_head.weight.device

    def set_precision(self, precision: str) -> TransformerPolicy:
        """Compute in ``precision`` from now on (see :data:`PRECISIONS`; call it after moving the policy to its
        device). ``"bf16"``: bfloat16 autocast for every forward (rollouts, updates, evaluation), bf16 KV caches
        from :meth:`initial_state`, fp32 weights and outputs. Returns the policy.

        Raises:
            ValueError: an unknown precision, or bf16 on a device without bf16 autocast (a GPU before Ampere, MPS).
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not accepted; choose one of {', '.join(PRECISIONS)}")
        if precision == "bf16":
            kind = self.device.type
            if kind not in ("cpu", "cuda"):
                raise ValueError(f"precision='bf16' runs on a CPU or a CUDA GPU, not on {kind}; use precision='fp32'")
            if kind == "cuda" and not torch.cuda.is_bf16_supported():
                raise ValueError(
                    f"{torch.cuda.get_device_name(self.device)} has no bfloat16 support (it needs compute capability "
                    ">= 8.0); use precision='fp32'"
                )
        self.precision = precision
        return self

    def _tokens(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        """Checked ``(B, L)`` long tokens and their lengths ``(B,)``."""
        if not isinstance(observation, Tensor) or observation.dim() != 2:
            shape = tuple(observation.shape) if isinstance(observation, Tensor) else type(observation).__name__
            raise ValueError(f"a transformer policy takes token tensors of shape (B, L), got {shape}")
        tokens = observation.to(self.device).long()
        return tokens, token_lengths(tokens)

    def _last_hidden(
        self, network: TokenTransformer, tokens: Tensor, lengths: Tensor
    ) -> tuple[Tensor, TransformerOutput]:
        """Hidden state ``(B, D)`` of each row's last real token, from one full forward."""
        width = int(lengths.max()) if len(lengths) else 1
        tokens = tokens[:, :width]
        out = network(tokens, token_mask=tokens != PAD, read=lengths - 1)
        return out.hidden, out

    def _log_probs(self, logits: Tensor, keep: Tensor | None = None) -> Tensor:
        return sampling_log_probs(logits, self.temperature, self.top_p, keep)

    def _choose(self, logits: Tensor, deterministic: bool) -> tuple[Tensor, Tensor]:
        """Actions ``(B,)`` (argmax, or a sample of the tempered nucleus) and their log-probabilities ``(B,)``."""
        logits = logits.float()  # a no-op from the fp32 head; kept so that any logits sample in fp32
        log_probs = self._log_probs(logits)
        if deterministic:
            actions = logits.argmax(dim=-1)
        else:
            # Gumbel-max (Gumbel 1954; Maddison et al. 2014, arXiv:1411.0030): argmax(log p - log(-log U)) is a
            # sample of p, and tokens outside the nucleus (-inf) never win. On CPU it costs ~40% of
            # torch.multinomial, whose exponential sampling dominates decoding's per-step overhead at small batch.
            # U is kept above 0 so that -log(-log U) stays finite.
            uniform = torch.rand_like(log_probs).clamp_(min=torch.finfo(log_probs.dtype).tiny)
            actions = (log_probs - uniform.log_().neg_().log_()).argmax(dim=-1)
        return actions, log_probs.gather(-1, actions[:, None]).squeeze(1)

    def _aux(self, out: TransformerOutput) -> dict[str, Tensor]:
        aux = {"aux_loss": out.aux_loss}
        if out.expert_load is not None:
            aux["expert_load"] = out.expert_load
        return aux

    # --- stateless: one observation per row, full forward ---

    @_in_precision
    def logits(self, observation: Tensor) -> Tensor:
        """Raw next-token logits ``(B, A)`` for token observations ``(B, L)``."""
        tokens, lengths = self._tokens(observation)
        hidden, _ = self._last_hidden(self.transformer, tokens, lengths)
        return self.policy_head(hidden).float()

    def act(self, observation: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Next token for each observation ``(B, L)``: sampled with temperature / top-p, or greedy (argmax).

        Returns:
            ``(actions (B,) long, log_prob (B,))``; log-probabilities of the tempered, truncated distribution.
        """
        return self._choose(self.logits(observation), deterministic)

    @_in_precision
    def evaluate_actions(self, observation: Tensor, actions: Tensor | np.ndarray) -> dict[str, Tensor]:
        """Log-probabilities and entropies of given next tokens, plus value and MoE terms (full forward).

        Args:
            observation: ``(B, L)`` token buffers.
            actions: ``(B,)`` (or ``(B, 1)``) token ids.

        Returns:
            ``{"log_prob": (B,), "entropy": (B,), "aux_loss": scalar}``, plus ``"value": (B,)`` with a critic and
            ``"expert_load": (E,)`` with MoE blocks.
        """
        tokens, lengths = self._tokens(observation)
        actions = torch.as_tensor(actions, device=self.device)
        if actions.dim() == 0 or actions.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"actions of shape {tuple(actions.shape)} do not match a batch of {tokens.shape[0]} observations"
            )
        actions = actions.reshape(tokens.shape[0]).long()
        hidden, out = self._last_hidden(self.transformer, tokens, lengths)
        log_probs = self._log_probs(self.policy_head(hidden), keep=actions)
        result = {
            "log_prob": log_probs.gather(-1, actions[:, None]).squeeze(1),
            "entropy": _entropy(log_probs),
            **self._aux(out),
        }
        if self.has_value:
            result["value"] = self._value_from(tokens, lengths, hidden)
        return result

    def _value_from(self, tokens: Tensor, lengths: Tensor, actor_hidden: Tensor | None) -> Tensor:
        if self.spec.shared_trunk:
            hidden = (
                actor_hidden if actor_hidden is not None else self._last_hidden(self.transformer, tokens, lengths)[0]
            )
        else:
            hidden = self._last_hidden(self.critic, tokens, lengths)[0]
        return self.value_head(hidden).squeeze(-1).float()

    @_in_precision
    def value(self, observation: Tensor) -> Tensor:
        """Critic estimate ``(B,)``.

        Raises:
            RuntimeError: if the policy was built with ``value_head=False``.
        """
        if not self.has_value:
            raise RuntimeError("this policy has no value head; build it with PolicySpec(value_head=True)")
        tokens, lengths = self._tokens(observation)
        return self._value_from(tokens, lengths, None)

    # --- incremental decoding with a KV cache ---

    def initial_state(self, num_envs: int, device: torch.device | str) -> KVCache:
        """An empty KV cache for ``num_envs`` rollout rows (bf16 entries at bf16 precision)."""
        return self.transformer.empty_cache(num_envs, device, torch.bfloat16 if self.precision == "bf16" else None)

    @_in_precision
    def act_with_state(
        self, observation: Tensor, state: KVCache, indices: Tensor | np.ndarray, deterministic: bool = False
    ) -> tuple[Tensor, Tensor, KVCache]:
        """Next token for the rollout rows ``indices`` ``(R,)``, whose observations are ``observation`` ``(R, L)``.

        A row whose cache holds exactly one token less than its observation feeds only the newest token; any other
        row (first call, or an observation that does not continue the cached sequence) is prefilled from its whole
        observation. Either way the result equals a full forward over the observation.

        Returns:
            ``(actions (R,), log_prob (R,), state)``; ``state`` is updated in place and returned.
        """
        tokens, lengths = self._tokens(observation)
        rows, in_order = self._rows(indices, state, tokens.shape[0])
        cached = state.length[rows]
        incremental = (cached > 0) & (lengths == cached + 1)
        if bool(incremental.all()):
            graph = self._decode_graph(state, deterministic)
            if graph is not None:
                newest = tokens[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]
                actions, log_probs = graph.run(newest, rows, in_order)
                state.length[rows] = lengths
                return actions, log_probs, state
            hidden = self._advance(tokens, lengths, state, rows, in_order)
        elif not bool(incremental.any()):
            hidden = self._prefill(tokens, lengths, state, rows)
        else:
            hidden = tokens.new_empty((tokens.shape[0], self.config.model_dim), dtype=self.policy_head.weight.dtype)
            step_rows, fill_rows = torch.nonzero(incremental).squeeze(1), torch.nonzero(~incremental).squeeze(1)
            advanced = self._advance(tokens[step_rows], lengths[step_rows], state, rows[step_rows], False)
            hidden[step_rows] = advanced[: step_rows.shape[0]]
            hidden[fill_rows] = self._prefill(tokens[fill_rows], lengths[fill_rows], state, rows[fill_rows])
        state.length[rows] = lengths
        actions, log_probs = self._choose(self.policy_head(hidden), deterministic)
        count = tokens.shape[0]  # _advance may have padded the rows (see _padded_count)
        return actions[:count], log_probs[:count], state

    def _prefill(self, tokens: Tensor, lengths: Tensor, state: KVCache, rows: Tensor) -> Tensor:
        """Fill the cache rows ``rows`` from whole observations ``(R, L)``; returns their last hidden states.

        Identical observations (a GRPO group's members all start from the same prompt) are run once and their keys
        and values copied to every row that has them: a row's cache depends on its own tokens only, and MoE
        routing has no capacity limit, so the copy equals a forward of its own.
        """
        width = int(lengths.max())
        tokens = tokens[:, :width]
        shared = _shared_prompts(tokens, lengths)
        distinct, inverse = shared if shared is not None else (tokens, None)
        read = (lengths if inverse is None else (distinct != PAD).sum(dim=1)) - 1
        out = self.transformer(distinct, token_mask=distinct != PAD, return_cache=True, read=read)
        assert out.keys is not None and out.values is not None
        state.reserve(width, self.config.context_length)
        for entries, keys, values in zip(state.entries, out.keys, out.values, strict=True):
            fresh = torch.stack((keys, values), dim=1).permute(0, 3, 1, 2, 4)  # (U, W, 2, H, D / H)
            fresh = fresh.to(entries.dtype)  # no-op unless the cache predates a set_precision
            entries[:, :width].index_copy_(0, rows, fresh if inverse is None else fresh.index_select(0, inverse))
        return out.hidden if inverse is None else out.hidden[inverse]

    def _rows(self, indices: Tensor | np.ndarray, state: KVCache, count: int) -> tuple[Tensor, bool]:
        """Checked cache rows ``(R,)`` (long, on the policy's device) for ``count`` observations, and whether they
        are all the cache's rows in order. Numpy indices (the collector's) are checked on the host: checking a
        tensor on a GPU waits for the device, twice."""
        if isinstance(indices, Tensor):
            rows = indices.to(self.device).long().reshape(-1)
            low, high = (int(rows.min()), int(rows.max())) if rows.numel() else (0, 0)
            in_order = rows.shape[0] == state.num_rows and torch.equal(
                rows, torch.arange(state.num_rows, device=rows.device)
            )
        else:
            host = np.asarray(indices).astype(np.int64, copy=False).reshape(-1)
            low, high = (int(host.min()), int(host.max())) if host.size else (0, 0)
            in_order = host.shape[0] == state.num_rows and bool((host == np.arange(state.num_rows)).all())
            rows = torch.as_tensor(host, device=self.device)
        if rows.shape[0] != count:
            raise ValueError(f"{rows.shape[0]} indices for {count} observations; give one index per row")
        if low < 0 or high >= state.num_rows:
            raise ValueError(f"indices must be in [0, {state.num_rows}), got {rows.tolist()}")
        return rows, in_order

    def _padded_count(self, count: int, limit: int) -> int:
        """How many rows a batch of ``count`` rows is computed as: ``count``, or at bf16 on a CPU, ``count`` rounded
        up to a multiple of :data:`BF16_CPU_ROW_MULTIPLE` (at most ``limit``)."""
        if self.precision != "bf16" or self.device.type != "cpu":
            return count
        return min(limit, -(-count // BF16_CPU_ROW_MULTIPLE) * BF16_CPU_ROW_MULTIPLE)

    def _advance(self, tokens: Tensor, lengths: Tensor, state: KVCache, rows: Tensor, in_order: bool) -> Tensor:
        """Hidden states ``(R', D)`` after feeding each row its newest token; ``R' >= R`` when the rows are padded
        (:meth:`_padded_count`: extra copies of the first row, which write the same key and value to the same cache
        slot as it does; the caller drops their outputs)."""
        positions = lengths - 1
        newest = tokens[torch.arange(tokens.shape[0], device=tokens.device), positions]
        width = int(positions.max()) + 1
        if in_order:  # every cache row, a fixed count
            return self.transformer.step(newest, positions, state, None, width)
        extra = self._padded_count(rows.shape[0], state.num_rows) - rows.shape[0]
        if extra > 0:
            newest, positions, rows = (torch.cat((part, part[:1].expand(extra))) for part in (newest, positions, rows))
        return self.transformer.step(newest, positions, state, rows, width)

    def _decode_graph(self, state: KVCache, deterministic: bool) -> _DecodeGraph | None:
        """The graph of a decoding step over ``state`` (made on first use), or None where decoding runs eagerly:
        off CUDA, with ``cuda_graphs`` False (the default), with MoE blocks (their routing is data-dependent), with
        gradients on, for a cache above :data:`DECODE_GRAPH_MAX_CACHE_BYTES` at full context, or once a row fills its
        context (the graph writes one slot past every row's cached length)."""
        on_cpu_for_tests = DECODE_GRAPH_ON_CPU and self.device.type == "cpu"
        if not self.cuda_graphs or self.is_moe or torch.is_grad_enabled():
            return None
        if self.device.type != "cuda" and not on_cpu_for_tests:
            return None
        config = self.config
        item = state.entries[0].element_size()
        if state.num_rows * config.context_length * 2 * config.model_dim * config.num_layers * item > (
            DECODE_GRAPH_MAX_CACHE_BYTES
        ):
            return None
        if int(state.length.max()) >= config.context_length:
            return None
        # what the capture baked in: sampling settings, and where the weights live (moving the policy moves them)
        key = (deterministic, self.temperature, self.top_p, tuple(p.data_ptr() for p in self.parameters()))
        graph = state.graphs.get(key)
        if graph is None:
            state.reserve(config.context_length, config.context_length)  # the graph needs entries that stay put
            graph = state.graphs[key] = _DecodeGraph(self, state, deterministic, capture=not on_cpu_for_tests)
        return graph

    # --- whole episodes: one masked forward ---

    @_in_precision
    def episode_logits(
        self, first_observations: Tensor, actions: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, TransformerOutput]:
        """Raw logits of every generated token of ``M`` episodes, from one full forward (teacher forcing).

        Args:
            first_observations: ``(M, L)`` the prompts (each episode's first observation).
            actions: ``(M, T)`` the generated tokens; entries where ``mask`` is False are ignored.
            mask: ``(M, T)`` bool, True at steps that happened (a prefix of each row).

        Episodes that share a prompt (GRPO's groups, in any order) are detected from the prompts themselves and
        the prompt is run once for all of them (dense blocks; the result equals one forward per episode).

        Returns:
            ``(logits (M, T, A), actions (M, T) long, forward output)``; logits at masked steps are meaningless. Of
            the forward output, callers use the MoE terms (``aux_loss``, ``expert_load``); its ``hidden`` depends on
            the path taken.
        """
        episodes = self._episodes(first_observations, actions, mask)
        hidden, out = self._episode_states(episodes, through_final=False)
        return self.policy_head(hidden).float(), episodes.actions, out

    def _episodes(self, first_observations: Tensor, actions: Tensor, mask: Tensor) -> _Episodes:
        """Checked episodes: prompts, their lengths, long actions, bool mask, generated counts, total widths."""
        prompts, prompt_lengths = self._tokens(first_observations)
        actions = torch.as_tensor(actions, device=self.device).long()
        mask = torch.as_tensor(mask, device=self.device).bool()
        if actions.dim() != 2 or actions.shape != mask.shape or actions.shape[0] != prompts.shape[0]:
            raise ValueError(
                f"actions {tuple(actions.shape)} and mask {tuple(mask.shape)} must both be (M, T) with M = "
                f"{prompts.shape[0]} episodes"
            )
        steps = actions.shape[1]
        generated = mask.sum(dim=1)
        if not torch.equal(mask, torch.arange(steps, device=mask.device) < generated[:, None]):
            raise ValueError("mask must be a prefix in each row (True for the steps that happened, then False)")
        total = prompt_lengths + generated
        width = max(int(total.max()), 1)
        if width > self.config.context_length:
            raise ValueError(
                f"an episode of {width} tokens (prompt + generated) exceeds context_length={self.config.context_length}"
            )
        return _Episodes(prompts, prompt_lengths, actions, mask, generated, total, width)

    def _episode_states(self, episodes: _Episodes, through_final: bool) -> tuple[Tensor, TransformerOutput]:
        """Actor hidden states of each episode's observations ``s_0..s_{T-1}`` ``(M, T, D)`` (the state ``s_t``
        predicts generated token ``t``), or ``s_0..s_T`` ``(M, T + 1, D)`` with ``through_final`` (the value of the
        observation after the last step, for bootstrapping). Shared prompts take the fast path (dense blocks)."""
        steps = episodes.actions.shape[1]
        groups = None if self.is_moe or steps < 2 else _shared_prompts(episodes.prompts, episodes.prompt_lengths)
        if groups is None:
            sequence, _ = self._episode_sequence(episodes)
            out = self.transformer(
                sequence, token_mask=torch.arange(episodes.width, device=self.device) < episodes.total[:, None]
            )
            return self._read_states(out.hidden, episodes, steps + through_final), out
        return self._episode_hidden_shared(*groups, episodes, through_final)

    def _episode_sequence(self, episodes: _Episodes) -> tuple[Tensor, Tensor]:
        """Whole episodes as left-aligned token rows ``(M, W)`` (prompt, then generated tokens, then PAD), and the
        column ``(M, T)`` where each generated token sits."""
        count, steps = episodes.actions.shape
        sequence = episodes.prompts.new_zeros((count, episodes.width))
        prompt_width = min(episodes.width, episodes.prompts.shape[1])
        sequence[:, :prompt_width] = episodes.prompts[:, :prompt_width]
        columns = episodes.prompt_lengths[:, None] + torch.arange(steps, device=self.device)
        rows = torch.arange(count, device=self.device)[:, None].expand(count, steps)
        sequence[rows[episodes.mask], columns[episodes.mask]] = episodes.actions[episodes.mask]
        return sequence, columns

    def _read_states(self, hidden: Tensor, episodes: _Episodes, count: int) -> Tensor:
        """Hidden states ``(M, count, D)`` of observations ``s_0..s_{count-1}`` from a full forward's ``(M, W, D)``:
        ``s_t`` ends at column ``prompt_length + t - 1`` (its last real token). Columns past an episode's end are
        clamped into the row; the values read there are meaningless and masked by the callers."""
        columns = episodes.prompt_lengths[:, None] - 1 + torch.arange(count, device=self.device)
        rows = torch.arange(hidden.shape[0], device=self.device)[:, None]
        return hidden[rows, columns.clamp(max=episodes.width - 1)]

    def _episode_hidden_shared(
        self, unique: Tensor, inverse: Tensor, episodes: _Episodes, through_final: bool
    ) -> tuple[Tensor, TransformerOutput]:
        """Same as the plain path of :meth:`_episode_states` when episodes share prompts (GRPO's groups): each
        distinct prompt ``unique`` ``(U, W)`` goes through the network once, and its keys and values are reused by the
        ``M`` episodes (``inverse`` ``(M,)`` names each episode's prompt row), which run only their generated tokens,
        packed: an episode of ``g`` generated tokens runs its first ``g - 1`` (the last one predicts nothing), or all
        ``g`` with ``through_final`` (the last one's hidden state is the final observation's).

        Causal attention makes this exact: a prompt token's hidden state, key and value depend on the prompt alone.
        Gradients through the shared prefix add up over the episodes that read it, as they do in the plain path.
        Masked steps get a zero hidden state (their logits are the policy head's bias).
        """
        prompt_lengths, actions, generated = episodes.prompt_lengths, episodes.actions, episodes.generated
        count, steps = actions.shape
        width = steps - 1 + through_final
        prefix = self.transformer(unique, return_cache=True, read=(unique != PAD).sum(dim=1) - 1)
        assert prefix.keys is not None and prefix.values is not None
        first = prefix.hidden[inverse]  # (M, D): the prompt's last hidden state predicts the first generated token
        # generated token t (t < g - 1) sits at position prompt_length + t and predicts token t + 1
        offsets = torch.arange(width, device=self.device)
        runs = generated[:, None] - 1 + through_final
        running = (offsets < runs).reshape(-1)
        index = torch.nonzero(running).squeeze(1)  # (K,) slots m * S + t
        real = index.shape[0]
        tokens = actions[:, :width].reshape(-1)[index]
        positions = (prompt_lengths[:, None] + offsets).reshape(-1)[index]
        extra = self._padded_count(real, count * width) - real
        if extra > 0:
            # padding tokens in unused slots: each sits after its episode's last real token, so no real token
            # attends to it, and its output is dropped (PAD at a valid position keeps everything finite)
            index = torch.cat((index, torch.nonzero(~running).squeeze(1)[:extra]))
            tokens = torch.cat((tokens, tokens.new_full((extra,), PAD)))
            positions = torch.cat((positions, positions.new_zeros(extra)))
        layout, past = _prompt_layout(index, inverse, unique, width)
        new_hidden = self.transformer.extend(
            tokens,
            positions,
            layout,
            [_past_rows(keys, past) for keys in prefix.keys],
            [_past_rows(values, past) for values in prefix.values],
        )
        grid = new_hidden.new_zeros((count * width, new_hidden.shape[-1])).index_copy_(
            0, index[:real], new_hidden[:real]
        )
        hidden = torch.cat((first[:, None], grid.view(count, width, -1)), dim=1)
        return hidden, TransformerOutput(hidden, prefix.aux_loss, None, None, None)

    @_in_precision
    def evaluate_episodes(
        self, first_observations: Tensor, actions: Tensor, mask: Tensor, with_values: bool = False
    ) -> dict[str, Tensor]:
        """Log-probabilities and entropies of every generated token of ``M`` episodes (one masked forward), and with
        ``with_values`` the critic's value of every observation along them.

        Args:
            first_observations: ``(M, L)`` prompts; actions: ``(M, T)`` generated tokens; mask: ``(M, T)`` bool.
            with_values: also return values (PPO on whole episodes). With ``shared_trunk`` they come from the same
                forward; a separate critic runs one more forward over the whole episodes.

        Returns:
            ``{"log_prob": (M, T), "entropy": (M, T), "aux_loss": scalar}`` (0 at masked steps), plus
            ``"expert_load": (E,)`` with MoE blocks. The distribution is the tempered, nucleus-truncated one. With
            ``with_values``: ``"value": (M, T)``, ``V(s_t)`` of the observation step ``t`` was taken in (equal to
            :meth:`value` on it; 0 at masked steps), and ``"final_value": (M,)``, ``V`` of the observation after each
            episode's last step (to bootstrap an episode cut by a length limit).

        Raises:
            RuntimeError: ``with_values`` on a policy built with ``value_head=False``.
        """
        if with_values and not self.has_value:
            raise RuntimeError("this policy has no value head; build it with PolicySpec(value_head=True)")
        episodes = self._episodes(first_observations, actions, mask)
        steps = episodes.actions.shape[1]
        actor_values = with_values and self.spec.shared_trunk
        hidden, out = self._episode_states(episodes, through_final=actor_values)
        log_probs = self._log_probs(self.policy_head(hidden[:, :steps]), keep=episodes.actions)
        chosen = log_probs.gather(-1, episodes.actions[..., None]).squeeze(-1)
        result = {
            "log_prob": torch.where(episodes.mask, chosen, 0.0),
            "entropy": torch.where(episodes.mask, _entropy(log_probs), 0.0),
            **self._aux(out),
        }
        if with_values:
            if actor_values:
                states = hidden
            else:
                sequence, _ = self._episode_sequence(episodes)
                states = self._read_states(self.critic(sequence).hidden, episodes, steps + 1)
            values = self.value_head(states).squeeze(-1).float()  # (M, T + 1): V(s_0) .. V(s_T)
            result["value"] = torch.where(episodes.mask, values[:, :steps], 0.0)
            result["final_value"] = values.gather(1, episodes.generated[:, None]).squeeze(1)
        return result

    # --- numpy interface ---

    def predict(
        self, observation: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        """stable-baselines3-shaped prediction from numpy token buffers ``(L,)`` or ``(B, L)`` (full forward).

        Returns:
            ``(actions, None)``: int64 actions; a single observation gives a single action.
        """
        single = _is_single(observation, self.observation_space)
        if single:
            observation = _add_batch_axis(observation)
        with torch.no_grad():
            actions, _ = self.act(obs_to_tensor(observation, self.observation_space, self.device), deterministic)
        actions_np = actions.cpu().numpy().astype(self.action_space.dtype, copy=False)
        return (np.asarray(actions_np[0]) if single else actions_np), None

    def num_parameters(self) -> int:
        """Number of scalar parameters (actor and critic)."""
        return sum(parameter.numel() for parameter in self.parameters())

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, top_p={self.top_p}"
