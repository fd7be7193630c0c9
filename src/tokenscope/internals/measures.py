"""Model internals per token: attention shares, attention received, depth convergence, logit lens.

Layers and attention modules are found through transformers' output-recording API
(`_can_record_outputs`, the same specification `output_hidden_states` / `output_attentions`
use), so any causal LM that supports those works without architecture-specific module names.
Forward hooks reduce what they see at once (attention weights are never kept per layer), and
attention weights come from the eager implementation, switched on only for the passes that read
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tokenscope.errors import ConfigError
from tokenscope.inputs.batching import length_sorted_batches, pad
from tokenscope.internals.options import MarkerAttentionOptions, RecurrentDepth
from tokenscope.model.anatomy import (
    attention_hooks,
    backbone,
    eager_attention,
    layer_output,
    model_anatomy,
    resolve_layers,
)
from tokenscope.model.types import CausalLM, TokenIds
from tokenscope.scoring.formulas import prediction_summary

# --- attention to marker tokens -------------------------------------------------------------


def marker_mask(token_strings: Sequence[str], markers: Sequence[str]) -> np.ndarray:
    """Tokens whose text overlaps an occurrence of a marker string (a marker may span tokens)."""
    lengths = np.fromiter((len(s) for s in token_strings), dtype=np.int64, count=len(token_strings))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    text = "".join(token_strings)
    mask = np.zeros(len(token_strings), dtype=bool)
    for marker in markers:
        at = text.find(marker)
        while at >= 0:
            mask[(starts < at + len(marker)) & (ends > at)] = True
            at = text.find(marker, at + 1)
    return mask


@torch.no_grad()
def marker_attention(
    model: CausalLM,
    sequences: Sequence[TokenIds],
    masks: Sequence[np.ndarray],
    query_starts: Sequence[int],
    *,
    options: MarkerAttentionOptions = MarkerAttentionOptions(),
    pad_id: int = 0,
    show_progress: bool = True,
) -> list[np.ndarray]:
    """Share of attention that each query position >= query_starts[i] gives to masked key positions.

    Averaged over heads and over the layers of `options` (its markers are the caller's: `masks`),
    `options.batch_size` sequences a pass; one float32 array per sequence, for query positions
    query_starts[i] .. len - 1. A generated token at position p was sampled from the query at
    p - 1, so for generation step t pass query_starts = prompt_length - 1.
    """
    anatomy = model_anatomy(model)
    chosen = resolve_layers(options.layers, anatomy.n_layers)
    device = next(model.parameters()).device
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    results: list[np.ndarray] = [np.zeros(0, np.float32)] * len(sequences)
    progress = tqdm(
        total=len(sequences), unit="seq", desc="marker attention", disable=not show_progress, mininterval=2.0
    )
    for rows in length_sorted_batches(lengths, options.batch_size):
        ids, attention_mask = pad([sequences[i] for i in rows], pad_id, "right", device)
        key_mask = torch.zeros(ids.shape, dtype=torch.float32, device=device)
        for j, i in enumerate(rows):
            key_mask[j, : lengths[i]] = torch.as_tensor(masks[i], dtype=torch.float32, device=device)
        total = torch.zeros(ids.shape, dtype=torch.float32, device=device)

        def reduce(layer: int, weights: Tensor, total: Tensor = total, key_mask: Tensor = key_mask) -> None:
            # [B, heads, Tq, Tk] x [B, Tk] -> share per query, mean over heads.
            total.add_(torch.einsum("bhqk,bk->bq", weights.float(), key_mask) / weights.shape[1])

        with eager_attention(model), attention_hooks(anatomy, chosen, reduce):
            backbone(model)(input_ids=ids, attention_mask=attention_mask)
        shares = (total / len(chosen)).cpu().numpy()
        for j, i in enumerate(rows):
            results[i] = shares[j, query_starts[i] : lengths[i]].astype(np.float32)
        progress.update(len(rows))
    progress.close()
    return results


# --- attention received per key position ----------------------------------------------------


@torch.no_grad()
def attention_received(model: CausalLM, ids: Sequence[int], heads: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each (layer, head): mean attention weight each key position k receives, averaged over
    the query positions that can attend to it (q >= k, causal). Returns [len(heads), T] float32."""
    anatomy = model_anatomy(model)
    n_heads = model.config.get_text_config().num_attention_heads
    for layer, head in heads:
        resolve_layers([layer], anatomy.n_layers)
        if not 0 <= head < n_heads:
            raise ConfigError(f"head {head} out of range for a model with {n_heads} heads")
    device = next(model.parameters()).device
    input_ids = torch.as_tensor([list(ids)], device=device)
    length = input_ids.shape[1]
    queries_per_key = torch.arange(length, 0, -1, device=device, dtype=torch.float32)  # T - k
    received: dict[tuple[int, int], Tensor] = {}

    def reduce(layer: int, weights: Tensor) -> None:
        for pair in heads:
            if pair[0] == layer:
                received[pair] = weights[0, pair[1]].float().sum(0) / queries_per_key

    with eager_attention(model), attention_hooks(anatomy, sorted({layer for layer, _ in heads}), reduce):
        backbone(model)(input_ids=input_ids)
    return torch.stack([received[pair] for pair in heads]).cpu().numpy().astype(np.float32)


# --- depth: hidden-state convergence and logit lens -----------------------------------------


@torch.no_grad()
def depth_states(model: CausalLM, ids: Sequence[int], recurrent: RecurrentDepth | None = None) -> Tensor:
    """Hidden states along depth, [S, T, H] float32 on the model's device.

    Layered models: S = L + 1, state 0 is the input of the first layer (embeddings), state l the
    residual stream after layer l (before the final norm). Recurrent-depth models: one state per
    call of `recurrent.module`, i.e. per iteration.
    """
    device = next(model.parameters()).device
    input_ids = torch.as_tensor([list(ids)], device=device)
    states: list[Tensor] = []
    if recurrent is not None:
        modules = dict(model.named_modules())
        if recurrent.module not in modules:
            raise ConfigError(f"recurrent.module {recurrent.module!r} is not a submodule of {type(model).__name__}")
        handle = modules[recurrent.module].register_forward_hook(
            lambda m, a, o: states.append(layer_output(o, 0)[0].float())
        )
        try:
            model(input_ids=input_ids, **{recurrent.steps_argument: recurrent.steps})
        finally:
            handle.remove()
        if not states:
            raise ConfigError(f"recurrent.module {recurrent.module!r} was never called")
        return torch.stack(states)
    anatomy = model_anatomy(model)

    def first_input(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        states.append((args[0] if args else kwargs["hidden_states"])[0].float())

    handles = [anatomy.layers[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [
        layer.register_forward_hook(
            lambda m, a, o: states.append(layer_output(o, anatomy.layer_output_index)[0].float())
        )
        for layer in anatomy.layers
    ]
    try:
        backbone(model)(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(states)


def convergence_distances(states: Tensor) -> np.ndarray:
    """||x_s - x_final||_2 per depth step and position: [S, T] float32 (last row is 0)."""
    return torch.linalg.vector_norm(states - states[-1:], dim=-1).cpu().numpy().astype(np.float32)


@dataclass
class LogitLens:
    entropy: np.ndarray  # [S, T] float32, nats
    top_ids: np.ndarray  # [S, T] int64
    top_probs: np.ndarray  # [S, T] float32


@torch.no_grad()
def logit_lens(model: CausalLM, states: Tensor, chunk_rows: int = 512) -> LogitLens:
    """Final norm + unembedding applied to every depth state, in chunks of positions (fp32 logits)."""
    anatomy = model_anatomy(model)
    flat = states.reshape(-1, states.shape[-1])
    entropy, top_ids, top_probs = [], [], []
    dtype = next(model.parameters()).dtype
    for start in range(0, flat.shape[0], chunk_rows):
        logits = anatomy.unembed(anatomy.normalize(flat[start : start + chunk_rows].to(dtype)))
        chunk_entropy, chunk_top_ids, chunk_top_probs = prediction_summary(logits)
        entropy.append(chunk_entropy)
        top_ids.append(chunk_top_ids)
        top_probs.append(chunk_top_probs)
    shape = states.shape[:2]
    return LogitLens(
        entropy=torch.cat(entropy).reshape(shape).cpu().numpy().astype(np.float32),
        top_ids=torch.cat(top_ids).reshape(shape).cpu().numpy(),
        top_probs=torch.cat(top_probs).reshape(shape).cpu().numpy().astype(np.float32),
    )
