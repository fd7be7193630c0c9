"""Cross-scoring: two checkpoints on the same tokens, compared position by position.

Any model can score any other model's generations or the reference answers. For each scored
token both models see the same prefix; we record each model's entropy and log-probability of
the token, and the KL divergence between their next-token distributions in both directions, in
nats over the full vocabulary, from fp32 logits (formulas in `scoring.formulas`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import torch

from tokenscope.errors import ModelError
from tokenscope.inputs.batching import pad_id_of
from tokenscope.inputs.sequences import ScoredSequence, require_within_context
from tokenscope.model.anatomy import Unembedding, backbone
from tokenscope.model.loading import max_positions
from tokenscope.model.tokenizers import require_same_tokenizer, tokenizer_fingerprint
from tokenscope.model.types import CausalLM, TokenIds, Tokenizer
from tokenscope.scoring.formulas import PairMetrics, divergence_from_logits
from tokenscope.scoring.tables import pair_table
from tokenscope.scoring.teacher_forcing import ScoringLayout


def _vocab_size(model: CausalLM) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


@torch.no_grad()
def pair_divergence(
    model_a: CausalLM,
    model_b: CausalLM,
    sequences: Sequence[TokenIds],
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
        raise ModelError(
            f"models {names[0]!r} and {names[1]!r} have output vocabularies of different sizes "
            f"({vocab_a} and {vocab_b}); KL over the full vocabulary needs the same one"
        )
    layout = ScoringLayout.build(sequences, score_starts, batch_size)
    unembed_a, unembed_b = Unembedding(model_a), Unembedding(model_b)
    body_a, body_b = backbone(model_a), backbone(model_b)
    device = next(model_a.parameters()).device
    parts: list[PairMetrics] = []
    for batch in layout.iter_batches(sequences, pad_id, "cross-scoring", show_progress):
        hidden_a = batch.scored_hidden(body_a)
        hidden_b = batch.scored_hidden(body_b)
        targets = batch.targets.to(device)
        for begin in range(0, targets.shape[0], chunk_rows):
            rows = slice(begin, begin + chunk_rows)
            logits_a = unembed_a(hidden_a[rows])
            logits_b = unembed_b(hidden_b[rows]).to(device)
            parts.append(divergence_from_logits(logits_a, logits_b, targets[rows]).to("cpu"))
    if not parts:
        return PairMetrics.empty()
    return PairMetrics.cat(parts).take(layout.input_order())


def score_pair(
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
    batch_size: int = 8,
    chunk_rows: int = 512,
    show_progress: bool = True,
) -> pa.Table:
    """The pair table of two models on `sequences` (tokens of `source`); refuses different tokenizers,
    and sequences longer than either model's positions."""
    require_same_tokenizer(
        {model_a_name: tokenizer_fingerprint(tokenizer_a), model_b_name: tokenizer_fingerprint(tokenizer_b)}
    )
    for model, name in ((model_a, model_a_name), (model_b, model_b_name)):
        require_within_context(sequences, max_positions(model), model=name, source=source)
    metrics = pair_divergence(
        model_a,
        model_b,
        [s.token_ids.tolist() for s in sequences],
        [s.score_start for s in sequences],
        batch_size=batch_size,
        chunk_rows=chunk_rows,
        pad_id=pad_id_of(tokenizer_a),
        show_progress=show_progress,
        names=(model_a_name, model_b_name),
    )
    return pair_table(
        model_a=model_a_name,
        model_b=model_b_name,
        source=source,
        prompt_set=prompt_set,
        sequences=sequences,
        metrics=metrics,
    )
