"""Batched, seeded generation that scores its own tokens from the logits it computes anyway.

A hand-written decode loop over the model's backbone with a KV cache: each step unembeds only the
last position in fp32, samples (see `sampling`), and records the raw-logit metrics of the chosen
token, so a model's own generations need no second forward pass. Finished rows leave the batch
(their rows of the preallocated KV cache are dropped), and prompts are batched by length to limit padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import StaticCache

from tokenscope.batching import length_sorted_batches, pad
from tokenscope.metrics import TokenMetrics, Unembedding, backbone, metrics_from_logits
from tokenscope.sampling import SamplingParams, sample_tokens


@dataclass(frozen=True)
class GenerationRequest:
    prompt_id: str
    sample: int
    seed: int
    prompt_ids: tuple[int, ...]


@dataclass
class Generation:
    """One generated sequence and the metrics of each of its tokens (numpy, on the CPU)."""

    request: GenerationRequest
    token_ids: np.ndarray  # [n] int64, eos included when generated
    finish_reason: str  # "eos" or "length"
    entropy: np.ndarray
    logprob: np.ndarray
    rank: np.ndarray
    topk_ids: np.ndarray  # [n, k]
    topk_logprobs: np.ndarray  # [n, k]


def eos_token_ids(model: nn.Module, tokenizer) -> list[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, (list, tuple)) else [configured]:
        if value is not None:
            ids.add(int(value))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def _keep_cache_rows(cache: StaticCache, rows: Tensor) -> None:
    """Drop finished rows from every layer of a static cache.

    transformers' static layers have no batch_select_indices (they exist for torch.compile, which
    wants fixed shapes); outside compile, indexing their backing tensors is safe.
    """
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False):
            layer.keys = layer.keys[rows]
            layer.values = layer.values[rows]
            layer.batch_size = int(rows.numel())


@torch.no_grad()
def generate_batch(
    model: nn.Module,
    unembed: Unembedding,
    requests: Sequence[GenerationRequest],
    params: SamplingParams,
    eos_ids: Sequence[int],
    pad_id: int,
    top_k: int,
    progress: tqdm | None = None,
) -> list[Generation]:
    device = next(model.parameters()).device
    rows, steps = len(requests), params.max_new_tokens
    input_ids, mask = pad([r.prompt_ids for r in requests], pad_id, "left", device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    body = backbone(model)
    prompt_width = input_ids.shape[1]
    # A preallocated cache: a growing one copies every layer's keys and values at every step.
    cache = StaticCache(config=model.config, max_cache_len=prompt_width + steps)
    out = body(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        cache_position=torch.arange(prompt_width, device=device),
        use_cache=True,
    )
    cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
    next_position = positions[:, -1] + 1
    seeds = torch.tensor([r.seed for r in requests], dtype=torch.long, device=device)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)

    tokens = torch.full((rows, steps), pad_id, dtype=torch.long, device=device)
    entropy = torch.zeros((rows, steps), dtype=torch.float32, device=device)
    logprob = torch.zeros_like(entropy)
    rank = torch.zeros((rows, steps), dtype=torch.int32, device=device)
    k = min(top_k, unembed.weight.shape[0])
    topk_ids = torch.zeros((rows, steps, k), dtype=torch.int32, device=device)
    topk_logprobs = torch.zeros((rows, steps, k), dtype=torch.float32, device=device)
    lengths = torch.full((rows,), steps, dtype=torch.long, device=device)
    ended_by_eos = torch.zeros(rows, dtype=torch.bool, device=device)
    active = torch.arange(rows, device=device)

    for step in range(steps):
        logits = unembed(hidden)
        chosen = sample_tokens(logits, params, seeds[active], step)
        m: TokenMetrics = metrics_from_logits(logits, chosen, k)
        tokens[active, step] = chosen
        entropy[active, step] = m.entropy
        logprob[active, step] = m.logprob
        rank[active, step] = m.rank
        topk_ids[active, step] = m.topk_ids
        topk_logprobs[active, step] = m.topk_logprobs
        done = torch.isin(chosen, eos)
        lengths[active[done]] = step + 1
        ended_by_eos[active[done]] = True
        if progress is not None:
            progress.update(int(active.numel()))
        if step == steps - 1:
            break
        keep = ~done
        remaining = int(keep.sum())  # one sync per step, not per token
        if remaining == 0:
            break
        if remaining < active.numel():
            kept = keep.nonzero().squeeze(1)
            _keep_cache_rows(cache, kept)
            active, chosen, mask, next_position = active[kept], chosen[kept], mask[kept], next_position[kept]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        out = body(
            input_ids=chosen.unsqueeze(1),
            attention_mask=mask,
            position_ids=next_position.unsqueeze(1),
            past_key_values=cache,
            cache_position=torch.tensor([prompt_width + step], device=device),
            use_cache=True,
        )
        cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        next_position = next_position + 1

    lengths_np = lengths.cpu().numpy()
    arrays = [t.cpu().numpy() for t in (tokens, entropy, logprob, rank, topk_ids, topk_logprobs)]
    eos_np = ended_by_eos.cpu().numpy()
    generations = []
    for row, request in enumerate(requests):
        n = int(lengths_np[row])
        tok, ent, lp, rk, tki, tkl = (a[row, :n] for a in arrays)
        generations.append(
            Generation(request, tok, "eos" if eos_np[row] else "length", ent, lp, rk, tki, tkl)
        )
    return generations


def generate(
    model: nn.Module,
    tokenizer,
    requests: Sequence[GenerationRequest],
    params: SamplingParams,
    batch_size: int,
    top_k: int = 5,
    show_progress: bool = True,
    eos_ids: Sequence[int] | None = None,
) -> list[Generation]:
    """Generate for all requests in length-sorted batches; results come back in request order.

    `eos_ids` (default: the model's and tokenizer's end-of-sequence tokens) end a sequence.
    """
    unembed = Unembedding(model)
    eos_ids = list(eos_ids) if eos_ids is not None else eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    results: list[Generation | None] = [None] * len(requests)
    progress = tqdm(
        total=len(requests) * params.max_new_tokens, unit="tok", desc="generating", disable=not show_progress,
        mininterval=2.0,
    )
    done = 0
    for rows in length_sorted_batches([len(r.prompt_ids) for r in requests], batch_size):
        batch = [requests[i] for i in rows]
        for index, generation in zip(rows, generate_batch(model, unembed, batch, params, eos_ids, pad_id, top_k, progress)):
            results[index] = generation
        # Rows that stopped early leave the rest of their token budget unused.
        done += len(rows)
        progress.n = done * params.max_new_tokens
        progress.refresh()
    progress.close()
    return [g for g in results if g is not None]
