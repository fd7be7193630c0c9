"""Cross-scoring: two checkpoints on the same tokens, compared position by position.

Any model can score any other model's generations or the reference answers. For each scored
token both models see the same prefix; we record each model's entropy and log-probability of
the token, and the KL divergence between their next-token distributions in both directions, in
nats over the full vocabulary, from fp32 logits (formulas in `scoring.formulas`). With
ScoringOptions.n_alternatives > 0 each model's top-k alternatives at each position are recorded too (the
side-by-side view shows both models' on the same text), from the same chunk of logits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import torch
from torch import Tensor
from tqdm.auto import tqdm

from tokenscope.errors import ModelError
from tokenscope.inputs.batching import pad_id_of
from tokenscope.inputs.sequences import ScoredSequence, require_within_context
from tokenscope.io import write_parquet_stream
from tokenscope.model.anatomy import Unembedding, backbone
from tokenscope.model.loading import max_positions
from tokenscope.model.tokenizers import require_same_tokenizer, tokenizer_fingerprint
from tokenscope.model.types import CausalLM, TokenIds, Tokenizer
from tokenscope.scoring.formulas import PairMetrics, TensorRows, divergence_from_logits, log_normalizer
from tokenscope.scoring.options import ScoringOptions
from tokenscope.scoring.tables import PAIR_ALTERNATIVES_SCHEMA, PAIR_SCHEMA, pair_table
from tokenscope.scoring.teacher_forcing import ScoringLayout


def _vocab_size(model: CausalLM) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


@dataclass
class PairAlternatives(TensorRows):
    """Both models' top-k alternatives at N scored positions, flat in input order (CPU)."""

    topk_ids_a: Tensor  # [N, k] int32, most probable first
    topk_logprobs_a: Tensor  # [N, k] float32
    topk_ids_b: Tensor
    topk_logprobs_b: Tensor

    @staticmethod
    def empty(k: int, n: int = 0) -> PairAlternatives:
        """n rows of k alternatives each (k = 0 for a pair scored without alternatives)."""
        ids, logprobs = torch.zeros((n, k), dtype=torch.int32), torch.zeros((n, k))
        return PairAlternatives(ids, logprobs, ids, logprobs)


def top_alternatives(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(ids [N, k] int32, logprobs [N, k] fp32) of each row's k most probable tokens, as
    `formulas.metrics_from_logits` computes its topk_* (the same ops on the same fp32 logits)."""
    logits = logits.float()
    k = min(k, logits.shape[-1])
    values, ids = logits.topk(k, dim=-1)
    return ids.int(), values - log_normalizer(logits)


@torch.no_grad()
def pair_scores(  # noqa: PLR0913 (two models, their token positions, options, and pad id, progress and names)
    model_a: CausalLM,
    model_b: CausalLM,
    sequences: Sequence[TokenIds],
    score_starts: Sequence[int],
    options: ScoringOptions | None = None,
    *,
    pad_id: int = 0,
    show_progress: bool = True,
    names: tuple[str, str] = ("model_a", "model_b"),
) -> tuple[PairMetrics, PairAlternatives]:
    """Pair metrics and both models' top-`options.n_alternatives` alternatives of tokens
    sequences[i][score_starts[i]:], flat in input order (pair_divergence for the metrics).
    None `options`: ScoringOptions' defaults."""
    options = options if options is not None else ScoringOptions()
    vocab_a, vocab_b = _vocab_size(model_a), _vocab_size(model_b)
    if vocab_a != vocab_b:
        raise ModelError(
            f"models {names[0]!r} and {names[1]!r} have output vocabularies of different sizes "
            f"({vocab_a} and {vocab_b}); KL over the full vocabulary needs the same one"
        )
    layout = ScoringLayout.build(sequences, score_starts, options.batch_size)
    unembed_a, unembed_b = Unembedding(model_a), Unembedding(model_b)
    body_a, body_b = backbone(model_a), backbone(model_b)
    device = next(model_a.parameters()).device
    k = min(max(options.n_alternatives, 0), vocab_a)
    chunk_rows = options.chunk_rows
    parts: list[PairMetrics] = []
    alternatives: list[PairAlternatives] = []
    for batch in layout.iter_batches(sequences, pad_id, "cross-scoring", show_progress):
        hidden_a = batch.scored_hidden(body_a)
        hidden_b = batch.scored_hidden(body_b)
        targets = batch.targets.to(device)
        for begin in range(0, targets.shape[0], chunk_rows):
            rows = slice(begin, begin + chunk_rows)
            logits_a = unembed_a(hidden_a[rows])
            logits_b = unembed_b(hidden_b[rows]).to(device)
            parts.append(divergence_from_logits(logits_a, logits_b, targets[rows]).to("cpu"))
            if k:
                alternatives.append(
                    PairAlternatives(*top_alternatives(logits_a, k), *top_alternatives(logits_b, k)).to("cpu")
                )
    if not parts:
        return PairMetrics.empty(), PairAlternatives.empty(k)
    order = layout.input_order()
    metrics = PairMetrics.cat(parts).take(order)
    if not k:
        return metrics, PairAlternatives.empty(0, metrics.kl_a_b.shape[0])
    return metrics, PairAlternatives.cat(alternatives).take(order)


@torch.no_grad()
def pair_divergence(  # noqa: PLR0913 (pair_scores')
    model_a: CausalLM,
    model_b: CausalLM,
    sequences: Sequence[TokenIds],
    score_starts: Sequence[int],
    options: ScoringOptions | None = None,
    *,
    pad_id: int = 0,
    show_progress: bool = True,
    names: tuple[str, str] = ("model_a", "model_b"),
) -> PairMetrics:
    """Pair metrics of tokens sequences[i][score_starts[i]:] under two models, flat in input order
    (`options.n_alternatives` aside: no alternatives).

    Batched like score_sequences (right padding, length-sorted batches of `options.batch_size`) so
    model A's numbers equal its own scoring. Per batch both backbones run on the same ids and only
    the hidden states of scored positions are kept; both output embeddings are then applied
    `options.chunk_rows` rows at a time, so no [sequence x vocabulary] tensor is ever whole. At its
    peak a chunk holds about ten fp32 chunk_rows x V tensors (scoring one model holds about four):
    with a large vocabulary use a smaller chunk_rows than for scoring. Metrics are computed on
    model A's device; `names` label the models in errors.
    """
    without_alternatives = replace(options if options is not None else ScoringOptions(), n_alternatives=0)
    metrics, _ = pair_scores(
        model_a,
        model_b,
        sequences,
        score_starts,
        without_alternatives,
        pad_id=pad_id,
        show_progress=show_progress,
        names=names,
    )
    return metrics


def _require_pair_tokenizer(names: tuple[str, str], tokenizer_a: Tokenizer, tokenizer_b: Tokenizer) -> None:
    """Refuse a pair of models whose tokenizers differ (TokenizerMismatchError naming both)."""
    require_same_tokenizer({names[0]: tokenizer_fingerprint(tokenizer_a), names[1]: tokenizer_fingerprint(tokenizer_b)})


def score_pair(  # noqa: PLR0913 (two models with their tokenizers and names, the tokens and their two labels, options, progress)
    model_a: CausalLM,
    tokenizer_a: Tokenizer,
    model_b: CausalLM,
    tokenizer_b: Tokenizer,
    sequences: Sequence[ScoredSequence],
    *,
    model_a_name: str,
    model_b_name: str,
    source: str,
    prompt_set: str,
    options: ScoringOptions | None = None,
    show_progress: bool = True,
) -> pa.Table:
    """The pair table of two models on `sequences` (tokens of `source`); refuses different tokenizers,
    and sequences longer than either model's positions. With `options.n_alternatives` > 0 it has
    both models' top-k alternatives too (tables.PAIR_ALTERNATIVES_SCHEMA), else PAIR_SCHEMA. None
    `options`: ScoringOptions' defaults. `write_pair` writes the same rows to a file, a chunk of
    sequences at a time."""
    _require_pair_tokenizer((model_a_name, model_b_name), tokenizer_a, tokenizer_b)
    labels = {"model_a": model_a_name, "model_b": model_b_name, "source": source, "prompt_set": prompt_set}
    options = options if options is not None else ScoringOptions()
    return _pair_table(model_a, model_b, sequences, pad_id_of(tokenizer_a), labels, options, show_progress)


def write_pair(  # noqa: PLR0913 (score_pair's, the file it writes and the progress bar's size)
    model_a: CausalLM,
    tokenizer_a: Tokenizer,
    model_b: CausalLM,
    tokenizer_b: Tokenizer,
    sequence_chunks: Iterable[Sequence[ScoredSequence]],
    path: str | Path,
    *,
    model_a_name: str,
    model_b_name: str,
    source: str,
    prompt_set: str,
    options: ScoringOptions | None = None,
    n_sequences: int | None = None,
    show_progress: bool = True,
) -> int:
    """Score chunks of sequences as score_pair does and write the pair table to `path`, one chunk
    at a time; returns the number of token rows.

    Memory is bounded by a chunk (its sequences, scores and table), not by the token count: a
    model's generations at research scale (10^7-10^8 tokens) would not fit as one table. Rows come
    in chunk order, each chunk in its sequences' order, as score_pair's; batches are formed (by
    length) within a chunk, so floats may differ from one score_pair call in their last bits. The
    file appears only when every chunk is written (a temporary file beside it, then renamed).
    `n_sequences` (if known) sizes the progress bar.
    """
    _require_pair_tokenizer((model_a_name, model_b_name), tokenizer_a, tokenizer_b)
    labels = {"model_a": model_a_name, "model_b": model_b_name, "source": source, "prompt_set": prompt_set}
    options = options if options is not None else ScoringOptions()
    schema = PAIR_ALTERNATIVES_SCHEMA if options.n_alternatives > 0 else PAIR_SCHEMA
    progress = tqdm(total=n_sequences, unit="seq", desc="cross-scoring", disable=not show_progress, mininterval=2.0)
    pad_id = pad_id_of(tokenizer_a)

    def tables() -> Iterator[pa.Table]:
        for chunk in sequence_chunks:
            yield _pair_table(model_a, model_b, chunk, pad_id, labels, options, show_progress=False)
            progress.update(len(chunk))

    try:
        return write_parquet_stream(tables(), path, schema)
    finally:
        progress.close()


def _pair_table(
    model_a: CausalLM,
    model_b: CausalLM,
    sequences: Sequence[ScoredSequence],
    pad_id: int,
    labels: dict[str, str],
    options: ScoringOptions,
    show_progress: bool,
) -> pa.Table:
    """score_pair's table, the tokenizers already checked; `labels`: its label columns (pair_table's
    model_a, model_b, source and prompt_set)."""
    names = (labels["model_a"], labels["model_b"])
    for model, name in zip((model_a, model_b), names, strict=True):
        require_within_context(sequences, max_positions(model), model=name, source=labels["source"])
    metrics, alternatives = pair_scores(
        model_a,
        model_b,
        [s.token_ids.tolist() for s in sequences],
        [s.score_start for s in sequences],
        options,
        pad_id=pad_id,
        show_progress=show_progress,
        names=names,
    )
    return pair_table(
        **labels,
        sequences=sequences,
        metrics=metrics,
        topk=(
            (
                alternatives.topk_ids_a,
                alternatives.topk_logprobs_a,
                alternatives.topk_ids_b,
                alternatives.topk_logprobs_b,
            )
            if options.n_alternatives > 0
            else None
        ),
    )
