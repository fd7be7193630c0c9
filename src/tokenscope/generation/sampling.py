"""Seeded, batch-invariant sampling.

Each sequence carries its own 31-bit seed derived from (global seed, prompt id, sample index), and
the random number for candidate token t at step s is a hash of (seed, s, t). So a sequence draws
the same tokens whatever batch it is in, whatever the batch order, and on any device; and two
models given the same seed share their random numbers (common random numbers make paired
comparisons between checkpoints less noisy).

Sampling follows transformers' order of warpers: temperature, then top-k, then top-p. Instead of
sorting the whole vocabulary every step, top-p works on the top candidates only and falls back to a
full sort only for rows whose nucleus is not inside them. `sample_with_entropy` also returns the
entropy of the distribution each token was drawn from (the sampling entropy), from the same
filtered candidates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tokenscope.errors import ConfigError
from tokenscope.scoring.formulas import entropy_from_log_probs, log_probs

MASK32 = 0xFFFFFFFF
# Multipliers below 2**31 keep every product of 32-bit values inside int64 (no overflow).
_M1 = 0x7FEB352D
_M2 = 0x6C8E9CF5
_CANDIDATES_FOR_TOP_P = 1024


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    max_new_tokens: int = 256

    @classmethod
    def resolve(cls, generation_config: Any, overrides: dict[str, Any]) -> SamplingParams:
        """Config overrides > the model's generation_config > transformers' library defaults."""
        library_defaults = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "max_new_tokens": 256}
        values: dict[str, Any] = {}
        for key, default in library_defaults.items():
            override = overrides.get(key)
            from_model = getattr(generation_config, key, None) if generation_config is not None else None
            values[key] = override if override is not None else (from_model if from_model is not None else default)
        values["top_k"] = int(values["top_k"] or 0)
        if values["temperature"] <= 0:
            raise ConfigError("sampling.temperature must be > 0 (use do_sample: false for greedy decoding)")
        if not 0 < values["top_p"] <= 1:
            raise ConfigError("sampling.top_p must be in (0, 1]")
        return cls(**values)


def sequence_seed(seed: int, prompt_id: str, sample: int) -> int:
    """Stable 31-bit seed of one sequence, independent of batching, ordering and model."""
    digest = hashlib.sha256(f"{seed}\x00{prompt_id}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds) on int64 tensors holding 32-bit values."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = (x * _M1) & MASK32
    x = x ^ (x >> 15)
    x = (x * _M2) & MASK32
    x = x ^ (x >> 16)
    return x


def hashed_uniform(seeds: Tensor, step: int | Tensor, token_ids: Tensor) -> Tensor:
    """Uniform (0, 1) float64 numbers, one per (row seed, row step, candidate token id)."""
    base = _mix32(_mix32(seeds.long() ^ 0x9E3779B9) ^ step).unsqueeze(-1)
    high = _mix32(base ^ token_ids.long())
    low = _mix32(high ^ 0x5BD1E995)
    # 53 random bits; +0.5 keeps the value strictly inside (0, 1).
    return ((high << 21) + (low >> 11)).double().add_(0.5).mul_(2.0**-53)


def _nucleus(exact_probs: Tensor, top_p: float) -> Tensor:
    """Keep the smallest prefix of descending probabilities whose mass reaches top_p (at least one).

    The probabilities are float64, computed without fp32 rounding at the scale of the logits, and
    summed in float64. In fp32 the mass before a token near 0.95 is off by up to a few 1e-6 (an fp32
    logsumexp of logits around 60 alone moves it by 3e-6), which dropped tokens whose mass before
    them is just under top_p. transformers' TopPLogitsWarper keeps a token when the mass of it and
    every less likely token (an ascending fp32 sum, accurate to about 1e-8 there) exceeds 1 - top_p,
    i.e. when the mass before it is below top_p: the criterion here.
    """
    mass_before = exact_probs.cumsum(-1) - exact_probs
    return mass_before < top_p


def _candidates_first(device: torch.device) -> bool:
    """Whether top-p without top-k tries the top candidates before a full sort: on the CPU only.

    Deciding whether every row's nucleus fits in the candidates reads the device; on a GPU that is
    a second wait per decode step, and a full sort of the vocabulary is cheap there. Both paths
    keep the same tokens (the nucleus is exact either way).
    """
    return device.type == "cpu"


def _filter(scaled: Tensor, params: SamplingParams) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Each row's candidate tokens in descending order of logit: (fp32 probabilities, token ids,
    the top-p keep mask or None without top-p, their scaled logits). Tokens outside the candidates
    are dropped (top-k) or have no mass that top-p could keep."""
    vocab = scaled.shape[-1]
    top_k = 0 < params.top_k < vocab
    k = params.top_k if top_k else vocab
    if params.top_p < 1.0 and k == vocab and _candidates_first(scaled.device):
        k = min(vocab, _CANDIDATES_FOR_TOP_P)
    values, ids = scaled.topk(k, dim=-1) if k < vocab else scaled.sort(dim=-1, descending=True)
    if top_k:
        probs = torch.softmax(values, dim=-1)  # top-k renormalizes before top-p, as in transformers
    else:
        probs = (values - torch.logsumexp(scaled, dim=-1, keepdim=True)).exp()
    if params.top_p >= 1.0:
        return probs, ids, None, values
    if top_k:
        exact = torch.softmax(values.double(), dim=-1)
    else:
        # float64 softmax of the candidates over the full row: values - max is exact, and the sum
        # of exp(logit - max) carries no large logit, so nothing rounds at the scale of the logits.
        row_max = values[..., :1]
        log_norm = (scaled - row_max).exp().sum(-1, keepdim=True).double().log()
        exact = (values.double() - row_max.double() - log_norm).exp()
    keep = _nucleus(exact, params.top_p)
    if not top_k and k < vocab:
        # Rows whose nucleus does not fit in the candidates: sort the full vocabulary for them.
        short = exact.sum(-1) < params.top_p
        if bool(short.any()):
            values, ids = scaled.sort(dim=-1, descending=True)
            probs = torch.softmax(values, dim=-1)
            keep = _nucleus(torch.softmax(values.double(), dim=-1), params.top_p)
    return probs, ids, keep, values


def _sampled_entropy(values: Tensor, keep: Tensor | None) -> Tensor:
    """Entropy in nats of the distribution drawn from: the softmax of the candidates' scaled logits
    over the ones kept (transformers' warpers set the others to -inf before their softmax)."""
    if keep is not None:
        values = values.masked_fill(~keep, float("-inf"))
    return entropy_from_log_probs(log_probs(values))


def _sample(
    logits: Tensor, params: SamplingParams, seeds: Tensor, step: int | Tensor, with_entropy: bool
) -> tuple[Tensor, Tensor | None]:
    if not params.do_sample:
        chosen = logits.argmax(-1)
        return chosen, torch.zeros(chosen.shape, device=logits.device) if with_entropy else None
    probs, ids, keep, values = _filter(logits / params.temperature, params)
    entropy = _sampled_entropy(values, keep) if with_entropy else None
    if keep is not None:
        probs = probs * keep
    # Exponential race (Gumbel-max): argmax p_i / E_i with E_i ~ Exp(1) samples i with prob. p_i.
    exponential = -hashed_uniform(seeds, step, ids).log()
    choice = (probs.double() / exponential).argmax(-1, keepdim=True)
    return ids.gather(-1, choice).squeeze(-1), entropy


def sample_tokens(logits: Tensor, params: SamplingParams, seeds: Tensor, step: int | Tensor) -> Tensor:
    """Next tokens [B] from fp32 raw logits [B, V]; `step` is one int or each row's own step [B]."""
    return _sample(logits, params, seeds, step, with_entropy=False)[0]


def sample_with_entropy(
    logits: Tensor, params: SamplingParams, seeds: Tensor, step: int | Tensor
) -> tuple[Tensor, Tensor]:
    """(next tokens [B], sampling entropy [B] float32) from fp32 raw logits [B, V]: the tokens of
    `sample_tokens`, and the entropy in nats of the distribution each was drawn from, after
    temperature, top-k and top-p (0 for greedy decoding), from the same filtered candidates."""
    chosen, entropy = _sample(logits, params, seeds, step, with_entropy=True)
    assert entropy is not None
    return chosen, entropy


def tempered_entropy(logits: Tensor, params: SamplingParams) -> Tensor:
    """Entropy in nats of softmax(logits / T) over the full vocabulary at the sampler's temperature
    T, without top-k or top-p [B] (what RL training stacks log as the policy's entropy); greedy
    decoding applies no temperature, so there it is the raw logits' entropy."""
    scaled = logits.float() / params.temperature if params.do_sample and params.temperature != 1.0 else logits
    return entropy_from_log_probs(log_probs(scaled))


def sample_with_metrics(
    logits: Tensor, params: SamplingParams, seeds: Tensor, step: int | Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """(next tokens [B], the sampler's own per-token metrics by TokenMetrics field name): the
    entropies of the distributions the sampler shapes from the raw logits."""
    chosen, entropy = sample_with_entropy(logits, params, seeds, step)
    return chosen, {"sampling_entropy": entropy, "tempered_entropy": tempered_entropy(logits, params)}


def sampled_support(logits: Tensor, params: SamplingParams) -> Tensor:
    """Boolean [B, V]: the tokens `sample_tokens` can draw from fp32 raw logits [B, V] (with
    sampling: those temperature, top-k and top-p leave, the ones transformers' warpers leave finite;
    greedy: the argmax)."""
    support = torch.zeros_like(logits, dtype=torch.bool)
    if not params.do_sample:
        return support.scatter_(-1, logits.argmax(-1, keepdim=True), True)
    _, ids, keep, _ = _filter(logits / params.temperature, params)
    if keep is None:
        return support.scatter_(-1, ids, True)
    return support.scatter_(-1, ids, keep)
