"""Cross-scoring: two checkpoints on the same tokens, compared position by position.

Any model can score any other model's generations or the reference answers. For each scored
token both models see the same prefix; we record each model's entropy and log-probability of
the token, and the KL divergence between their next-token distributions in both directions, in
nats over the full vocabulary, from fp32 logits (as in the scoring step, see metrics.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tokenscope.compare import TokenizerMismatchError
from tokenscope.metrics import Unembedding, backbone
from tokenscope.models import tokenizer_fingerprint
from tokenscope.score import ScoringLayout
from tokenscope.tables import SCHEMA_VERSION, SCORED_TOKEN_KEYS, ScoredPositions, ScoredSequence, constant_column

PAIR_SCHEMA = pa.schema(
    [
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        *SCORED_TOKEN_KEYS,
        ("token_id", pa.int32()),
        ("logprob_a", pa.float32()),
        ("logprob_b", pa.float32()),
        ("logprob_diff", pa.float32()),
        ("entropy_a", pa.float32()),
        ("entropy_b", pa.float32()),
        ("kl_a_b", pa.float32()),
        ("kl_b_a", pa.float32()),
    ],
    metadata={"tokenscope_schema": SCHEMA_VERSION, "tokenscope_table": "pairs"},
)


# --- Pair metrics ---------------------------------------------------------------------------------


@dataclass
class PairMetrics:
    """Metrics of N tokens scored by models A and B, flat in input order (CPU, float32 [N])."""

    logprob_a: Tensor
    logprob_b: Tensor
    entropy_a: Tensor
    entropy_b: Tensor
    kl_a_b: Tensor  # KL(A || B) = sum_v p_A(v) (log p_A(v) - log p_B(v))
    kl_b_a: Tensor  # KL(B || A)

    @property
    def logprob_diff(self) -> Tensor:
        """log p_B(token) - log p_A(token)."""
        return self.logprob_b - self.logprob_a

    @staticmethod
    def cat(parts: list[PairMetrics]) -> PairMetrics:
        return PairMetrics(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(PairMetrics)))

    def take(self, index: Tensor) -> PairMetrics:
        return PairMetrics(*(getattr(self, f.name)[index] for f in fields(PairMetrics)))

    def to(self, device: torch.device | str) -> PairMetrics:
        return PairMetrics(*(getattr(self, f.name).to(device) for f in fields(PairMetrics)))

    @staticmethod
    def empty() -> PairMetrics:
        return PairMetrics(*(torch.zeros(0) for _ in fields(PairMetrics)))


def _sum_where_positive(weight: Tensor, term: Tensor) -> Tensor:
    # weight * term is nan where weight = 0 and term = ±inf (a -inf logit); such entries add 0.
    return torch.where(weight > 0, weight * term, torch.zeros((), device=weight.device)).sum(-1)


def divergence_from_logits(logits_a: Tensor, logits_b: Tensor, targets: Tensor) -> PairMetrics:
    """Pair metrics of `targets` [N] under raw logits [N, V] of two models; upcasts to fp32.

    Entropy and log-probability are defined exactly as in metrics_from_logits. A vocabulary entry
    with a -inf logit in both models adds nothing to either KL; one that only B excludes while A
    gives it mass makes KL(A || B) infinite, as the definition says.
    """
    # the same normalization as metrics_from_logits, so model A's numbers equal its own scoring
    logits_a, logits_b = logits_a.float(), logits_b.float()
    logp_a = logits_a - torch.logsumexp(logits_a, dim=-1, keepdim=True)
    logp_b = logits_b - torch.logsumexp(logits_b, dim=-1, keepdim=True)
    p_a, p_b = logp_a.exp(), logp_b.exp()
    log_ratio = logp_a - logp_b  # nan only where both are -inf, and then both weights are 0
    index = targets.view(-1, 1).long()
    return PairMetrics(
        logprob_a=logp_a.gather(1, index).squeeze(1),
        logprob_b=logp_b.gather(1, index).squeeze(1),
        entropy_a=-_sum_where_positive(p_a, logp_a),
        entropy_b=-_sum_where_positive(p_b, logp_b),
        # KL >= 0; fp32 rounding of nearly equal distributions can give -1e-8, clamp it away
        kl_a_b=_sum_where_positive(p_a, log_ratio).clamp_min(0),
        kl_b_a=_sum_where_positive(p_b, -log_ratio).clamp_min(0),
    )


def _vocab_size(model: nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


@torch.no_grad()
def pair_divergence(
    model_a: nn.Module,
    model_b: nn.Module,
    sequences: Sequence[Sequence[int]],
    score_starts: Sequence[int],
    *,
    batch_size: int = 8,
    chunk_rows: int = 512,
    pad_id: int = 0,
    show_progress: bool = True,
    names: tuple[str, str] = ("model_a", "model_b"),
) -> PairMetrics:
    """Pair metrics of tokens sequences[i][score_starts[i]:] under two models, flat in input order.

    Batched like score_sequences (right padding, length-sorted batches) so model A's numbers equal
    its own scoring. Per batch both backbones run on the same ids and only the hidden states of
    scored positions are kept; both output embeddings are then applied chunk_rows rows at a time,
    so no [sequence x vocabulary] tensor is ever whole. At its peak a chunk holds about ten fp32
    chunk_rows x V tensors (scoring one model holds about four): with a large vocabulary use a
    smaller chunk_rows than for scoring. Metrics are computed on model A's device; `names` label
    the models in errors.
    """
    vocab_a, vocab_b = _vocab_size(model_a), _vocab_size(model_b)
    if vocab_a != vocab_b:
        raise ValueError(
            f"models {names[0]!r} and {names[1]!r} have output vocabularies of different sizes "
            f"({vocab_a} and {vocab_b}); KL over the full vocabulary needs the same one"
        )
    layout = ScoringLayout.build(sequences, score_starts, batch_size)
    unembed_a, unembed_b = Unembedding(model_a), Unembedding(model_b)
    body_a, body_b = backbone(model_a), backbone(model_b)
    device = next(model_a.parameters()).device
    parts: list[PairMetrics] = []
    progress = tqdm(total=layout.n_tokens, unit="tok", desc="cross-scoring", disable=not show_progress, mininterval=2.0)
    for batch in layout.iter_batches(sequences, pad_id):
        hidden_a = batch.scored_hidden(body_a)
        hidden_b = batch.scored_hidden(body_b)
        targets = batch.targets.to(device)
        for begin in range(0, targets.shape[0], chunk_rows):
            rows = slice(begin, begin + chunk_rows)
            logits_a = unembed_a(hidden_a[rows])
            logits_b = unembed_b(hidden_b[rows]).to(device)
            parts.append(divergence_from_logits(logits_a, logits_b, targets[rows]).to("cpu"))
        progress.update(targets.shape[0])
    progress.close()
    if not parts:
        return PairMetrics.empty()
    return PairMetrics.cat(parts).take(layout.input_order())


# --- Tables ---------------------------------------------------------------------------------------


def pair_table(
    *,
    model_a: str,
    model_b: str,
    source: str,
    prompt_set: str,
    sequences: Sequence[ScoredSequence],
    metrics: PairMetrics,
) -> pa.Table:
    """One row per scored token of `sequences` (PAIR_SCHEMA); `metrics` rows in input order."""
    where = ScoredPositions.of(sequences)
    n = where.n
    if metrics.kl_a_b.shape[0] != n:
        raise ValueError(f"{metrics.kl_a_b.shape[0]} metric rows for {n} scored tokens")
    as_f32 = lambda t: pa.array(t.numpy().astype(np.float32))
    columns = {
        "model_a": constant_column(model_a, n),
        "model_b": constant_column(model_b, n),
        "source": constant_column(source, n),
        "prompt_set": constant_column(prompt_set, n),
        **where.key_columns(sequences),
        "context_token_id": pa.array(where.all_ids[where.flat_index - 1].astype(np.int32)),
        "token_id": pa.array(where.all_ids[where.flat_index].astype(np.int32)),
        "logprob_a": as_f32(metrics.logprob_a),
        "logprob_b": as_f32(metrics.logprob_b),
        "logprob_diff": as_f32(metrics.logprob_diff),
        "entropy_a": as_f32(metrics.entropy_a),
        "entropy_b": as_f32(metrics.entropy_b),
        "kl_a_b": as_f32(metrics.kl_a_b),
        "kl_b_a": as_f32(metrics.kl_b_a),
    }
    return pa.table(columns, schema=PAIR_SCHEMA)


def check_same_vocabulary(tokenizer_a: Any, tokenizer_b: Any, model_a: str, model_b: str) -> None:
    """Raise TokenizerMismatchError naming both models if their tokenizers tokenize differently."""
    if tokenizer_fingerprint(tokenizer_a) != tokenizer_fingerprint(tokenizer_b):
        raise TokenizerMismatchError(
            f"models {model_a!r} and {model_b!r} have different tokenizers; "
            "token-by-token comparison needs one tokenizer"
        )


def score_pair(
    model_a: nn.Module,
    tokenizer_a: Any,
    model_b: nn.Module,
    tokenizer_b: Any,
    sequences: Sequence[ScoredSequence],
    *,
    model_a_name: str,
    model_b_name: str,
    source: str,
    prompt_set: str,
    batch_size: int = 8,
    chunk_rows: int = 512,
    show_progress: bool = True,
) -> pa.Table:
    """The pair table of two models on `sequences` (tokens of `source`); refuses different tokenizers."""
    check_same_vocabulary(tokenizer_a, tokenizer_b, model_a_name, model_b_name)
    metrics = pair_divergence(
        model_a,
        model_b,
        [s.token_ids.tolist() for s in sequences],
        [s.score_start for s in sequences],
        batch_size=batch_size,
        chunk_rows=chunk_rows,
        pad_id=tokenizer_a.pad_token_id or 0,
        show_progress=show_progress,
        names=(model_a_name, model_b_name),
    )
    return pair_table(
        model_a=model_a_name, model_b=model_b_name, source=source, prompt_set=prompt_set,
        sequences=sequences, metrics=metrics,
    )
