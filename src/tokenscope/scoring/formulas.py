"""Every per-token formula, from raw logits in fp32: the one place they are written.

Generation, teacher forcing, cross-scoring, sampling and the logit lens all call these. Entropy is
the Shannon entropy H = -sum_v p_v log p_v (nats) of the softmax p of the raw logits over the full
vocabulary; varentropy is the variance of the surprisal -log p under p, sum_v p_v (log p_v + H)^2
(computed in two passes, around H, not as E[s^2] - H^2, which cancels); margin is log p of the most
probable token minus that of the second (the difference of their logits); prob/logprob are those
of the observed next token under the same distribution; rank is 1 + the number of vocabulary
entries with a strictly larger logit; KL(A || B) = sum_v p_A(v) (log p_A(v) - log p_B(v)).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from tokenscope.model.anatomy import Unembedding


def log_normalizer(logits: Tensor) -> Tensor:
    """log sum_v exp(logit_v) per row, keepdim: logprobs are `logits - log_normalizer(logits)`."""
    return torch.logsumexp(logits, dim=-1, keepdim=True)


def log_probs(logits: Tensor) -> Tensor:
    """Log-softmax of fp32 logits, computed as logits minus their log-normalizer."""
    logits = logits.float()
    return logits - log_normalizer(logits)


def sum_where_positive(weight: Tensor, term: Tensor) -> Tensor:
    """sum_v weight_v * term_v over entries with weight_v > 0.

    weight * term is nan where weight = 0 and term = ±inf (a -inf logit); such entries add 0.
    """
    return torch.where(weight > 0, weight * term, torch.zeros((), device=weight.device)).sum(-1)


# exp() of a float32 below about -104 is 0, so clamping log-probabilities to this floor changes no
# term p_v * f(log p_v) of a probability-weighted sum, and turns the -inf of a masked vocabulary
# entry (p_v = 0) into a finite value whose term is 0 rather than nan, without a select per entry.
LOGPROB_FLOOR = -1.0e4


def entropy_from_log_probs(logp: Tensor) -> Tensor:
    """Shannon entropy in nats of each row's distribution, given its log-probabilities."""
    logp = logp.clamp_min(LOGPROB_FLOOR)
    return -(logp.exp() * logp).sum(-1)


def surprisal_moments(logp: Tensor, *, overwrite: bool = False) -> tuple[Tensor, Tensor]:
    """(entropy, varentropy) of each row's distribution, in nats and nats^2, given its log-probabilities.

    Varentropy sum_v p_v (log p_v + H)^2 is summed around the entropy H, once that is known (not
    as E[(log p)^2] - H^2, which loses the digits that the two terms share). With `overwrite`, `logp`
    is used as scratch space (the [N, V] buffers are the cost of this on large vocabularies). The
    entropy is entropy_from_log_probs's, to the bit.
    """
    logp = logp.clamp_min_(LOGPROB_FLOOR) if overwrite else logp.clamp_min(LOGPROB_FLOOR)
    p = logp.exp()
    terms = p * logp
    entropy = -terms.sum(-1)
    centred_squared = logp.add_(entropy.unsqueeze(-1)).square_()
    return entropy, torch.mul(p, centred_squared, out=terms).sum(-1)


def kl_from_log_probs(logp_a: Tensor, logp_b: Tensor) -> tuple[Tensor, Tensor]:
    """(KL(A || B), KL(B || A)) per row, in nats.

    A vocabulary entry with a -inf logit in both models adds nothing to either KL; one that only
    B excludes while A gives it mass makes KL(A || B) infinite, as the definition says. fp32
    rounding of nearly equal distributions can give -1e-8: clamped to 0.
    """
    log_ratio = logp_a - logp_b  # nan only where both are -inf, and then both weights are 0
    return (
        sum_where_positive(logp_a.exp(), log_ratio).clamp_min(0),
        sum_where_positive(logp_b.exp(), -log_ratio).clamp_min(0),
    )


def host_exp(logprobs: Tensor) -> Tensor:
    """exp() of host log-probabilities in numpy, as the tables' alternatives have always been
    written (torch's and numpy's float32 exp differ in the last bit of many values)."""
    return torch.from_numpy(np.exp(logprobs.numpy()))


_Rows = TypeVar("_Rows", bound="TensorRows")


class TensorRows:
    """A dataclass of tensors with one row per scored token, concatenated, indexed and moved together.

    A field may be None (a metric these rows do not have); it stays None.
    """

    @classmethod
    def cat(cls: type[_Rows], parts: Sequence[_Rows]) -> _Rows:
        columns = []
        for f in fields(cls):  # type: ignore[arg-type]
            values = [getattr(p, f.name) for p in parts]
            present = [v for v in values if v is not None]
            if present and len(present) != len(values):
                raise ValueError(f"{cls.__name__}.cat: {f.name} is None in some parts only")
            columns.append(torch.cat(present) if present else None)
        return cls(*columns)

    def map(self: _Rows, fn: Callable[[Tensor], Tensor]) -> _Rows:
        """The rows with `fn` applied to every field that is not None."""
        values = [getattr(self, f.name) for f in fields(self)]  # type: ignore[arg-type]
        return type(self)(*(None if v is None else fn(v) for v in values))

    def take(self: _Rows, index: Tensor) -> _Rows:
        return self.map(lambda v: v[index])

    def to(self: _Rows, device: torch.device | str) -> _Rows:
        return self.map(lambda v: v.to(device))


# --- One model's metrics of observed tokens ---------------------------------------------------------


@dataclass
class TokenMetrics(TensorRows):
    """Metrics for N scored positions (tensors on the device they were computed on).

    All but sampling_entropy and tempered_entropy are of the model's raw distribution (softmax of
    the raw logits); sampling_entropy is that of the distribution a token was drawn from (after
    temperature, top-k and top-p; 0 for greedy decoding), tempered_entropy that of softmax(logits
    / T) at the sampler's temperature without truncation: generated tokens only, None for
    teacher-forced ones (`sampling.sample_with_metrics`).
    """

    entropy: Tensor  # [N] float32
    logprob: Tensor  # [N] float32
    rank: Tensor  # [N] int32
    topk_ids: Tensor  # [N, k] int32
    topk_logprobs: Tensor  # [N, k] float32
    varentropy: Tensor  # [N] float32
    margin: Tensor  # [N] float32: log p(top-1) - log p(top-2)
    sampling_entropy: Tensor | None = None  # [N] float32, generated tokens only
    tempered_entropy: Tensor | None = None  # [N] float32, generated tokens only: softmax(logits / T)

    @property
    def prob(self) -> Tensor:
        return self.logprob.exp()

    @property
    def topk_probs(self) -> Tensor:
        return host_exp(self.topk_logprobs)

    @staticmethod
    def empty(top_k: int) -> TokenMetrics:
        nothing = torch.zeros(0, dtype=torch.float32)
        return TokenMetrics(
            entropy=nothing,
            logprob=nothing,
            rank=nothing.int(),
            topk_ids=torch.zeros((0, top_k)).int(),
            topk_logprobs=torch.zeros((0, top_k)),
            varentropy=nothing,
            margin=nothing,
        )


def metrics_from_logits(logits: Tensor, targets: Tensor, top_k: int) -> TokenMetrics:
    """Metrics of `targets` [N] under raw `logits` [N, V]; upcasts to fp32 first.

    One pass of vectorized operations over the rows: the log-normalizer, the log-probabilities and
    their exponentials serve entropy and varentropy (in three [N, V] buffers); one top-k
    of max(top_k, 2) serves the alternatives and the margin (a difference of logits, free of the
    log-normalizer's rounding). sampling_entropy is the sampler's (`sampling.sample_with_metrics`).
    """
    logits = logits.float()
    log_norm = log_normalizer(logits)
    target_logits = logits.gather(1, targets.view(-1, 1).long())
    rank = (logits > target_logits).sum(-1, dtype=torch.int32) + 1
    vocab = logits.shape[-1]
    n_top = min(max(top_k, 2), vocab)
    top_values, top_ids = logits.topk(n_top, dim=-1)
    if n_top >= 2:
        margin = top_values[:, 0] - top_values[:, 1]
    else:  # a one-entry vocabulary: no second token, log p of it is -inf
        margin = torch.full(logits.shape[:1], float("inf"), device=logits.device)
    entropy, varentropy = surprisal_moments(logits - log_norm, overwrite=True)
    k = min(top_k, vocab)
    return TokenMetrics(
        entropy=entropy,
        logprob=(target_logits - log_norm).squeeze(1),
        rank=rank,
        topk_ids=top_ids[:, :k].int(),
        topk_logprobs=top_values[:, :k] - log_norm,
        varentropy=varentropy,
        margin=margin,
    )


def chunked_metrics(hidden: Tensor, targets: Tensor, unembed: Unembedding, top_k: int, chunk_rows: int) -> TokenMetrics:
    """Metrics for N hidden states [N, H], never materializing more than chunk_rows x V logits."""
    parts = [
        metrics_from_logits(unembed(hidden[start : start + chunk_rows]), targets[start : start + chunk_rows], top_k)
        for start in range(0, hidden.shape[0], chunk_rows)
    ]
    return TokenMetrics.cat(parts) if parts else TokenMetrics.empty(top_k).to(hidden.device)


# --- Two models on the same tokens ------------------------------------------------------------------


@dataclass
class PairMetrics(TensorRows):
    """Metrics of N tokens scored by models A and B, flat in input order (CPU, float32 [N])."""

    logprob_a: Tensor
    logprob_b: Tensor
    entropy_a: Tensor
    entropy_b: Tensor
    kl_a_b: Tensor  # KL(A || B)
    kl_b_a: Tensor  # KL(B || A)

    @property
    def logprob_diff(self) -> Tensor:
        """log p_B(token) - log p_A(token)."""
        return self.logprob_b - self.logprob_a

    @staticmethod
    def empty() -> PairMetrics:
        return PairMetrics(*(torch.zeros(0) for _ in fields(PairMetrics)))


def divergence_from_logits(logits_a: Tensor, logits_b: Tensor, targets: Tensor) -> PairMetrics:
    """Pair metrics of `targets` [N] under raw logits [N, V] of two models; upcasts to fp32.

    Entropy and log-probability are those of metrics_from_logits, so model A's numbers equal its
    own scoring.
    """
    logp_a, logp_b = log_probs(logits_a), log_probs(logits_b)
    index = targets.view(-1, 1).long()
    kl_a_b, kl_b_a = kl_from_log_probs(logp_a, logp_b)
    return PairMetrics(
        logprob_a=logp_a.gather(1, index).squeeze(1),
        logprob_b=logp_b.gather(1, index).squeeze(1),
        entropy_a=entropy_from_log_probs(logp_a),
        entropy_b=entropy_from_log_probs(logp_b),
        kl_a_b=kl_a_b,
        kl_b_a=kl_b_a,
    )


# --- A prediction without an observed token (logit lens) --------------------------------------------


def prediction_summary(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(entropy, top-1 id, top-1 probability) of each row's distribution."""
    logp = log_probs(logits)
    best = logp.max(dim=-1)
    return entropy_from_log_probs(logp), best.indices, best.values.exp()
