"""Batched, seeded generation that scores its own tokens from the logits it computes anyway.

A hand-written decode loop over the model's backbone with a KV cache: each step unembeds only the
last position in fp32, samples (see `sampling`), and records the raw-logit metrics of the chosen
token, so a model's own generations need no second forward pass. The KV cache is preallocated;
a row that finishes hands its slot to the next queued prompt, so the batch stays full.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from tokenscope.errors import ConfigError
from tokenscope.generation.kv_cache import build_cache, has_sliding_window, preallocated_layers
from tokenscope.generation.sampling import SamplingParams, sample_tokens
from tokenscope.inputs.batching import pad, pad_id_of
from tokenscope.model.anatomy import Unembedding, backbone
from tokenscope.model.loading import max_positions
from tokenscope.model.types import CausalLM, Tokenizer
from tokenscope.scoring.formulas import TokenMetrics, metrics_from_logits
from tokenscope.scoring.options import renamed_top_k

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_id: str
    sample: int
    seed: int
    prompt_ids: tuple[int, ...]
    inserted: tuple[int, int] | None = None  # span of a prompt transform's tokens in prompt_ids
    max_new_tokens: int | None = None  # this request's own cap (fit_to_context), below the sampling one


def new_token_budget(request: GenerationRequest, max_new_tokens: int) -> int:
    """The most tokens a request may generate: the sampling limit, or its own smaller cap."""
    limit = int(max_new_tokens)
    return limit if request.max_new_tokens is None else min(limit, int(request.max_new_tokens))


def fit_to_context(
    requests: Sequence[GenerationRequest],
    max_new_tokens: int,
    limit: int | None,
    *,
    truncate: bool = False,
    model_name: str | None = None,
) -> list[GenerationRequest]:
    """Check that every prompt + its new tokens fits the model's `limit` positions (None: no limit).

    Refuses the first that does not with a ConfigError naming the prompt, its length and the
    limit; with `truncate`, caps each such request's new tokens to what fits instead (a prompt
    that leaves no room for one token is still refused). Requests that fit are returned as given.
    """
    if limit is None:
        return list(requests)
    model = f"model {model_name!r}" if model_name else "the model"
    fitted = []
    truncated: dict[str, int] = {}
    for request in requests:
        length, budget = len(request.prompt_ids), new_token_budget(request, max_new_tokens)
        if length + budget <= limit:
            fitted.append(request)
            continue
        if length >= limit:
            raise ConfigError(
                f"prompt {request.prompt_id!r}: {length} prompt tokens leave no room for a new token "
                f"in the {limit} positions of {model}; shorten the prompt"
            )
        if not truncate:
            raise ConfigError(
                f"prompt {request.prompt_id!r}: {length} prompt tokens + max_new_tokens {budget} = "
                f"{length + budget} exceed the {limit} positions of {model}; lower "
                "generation.sampling.max_new_tokens, shorten the prompt, or set "
                "generation.truncate_to_context: true to cap each prompt's new tokens to what fits"
            )
        truncated[request.prompt_id] = limit - length
        fitted.append(replace(request, max_new_tokens=limit - length))
    if truncated:
        shown = ", ".join(f"{prompt_id!r} to {n}" for prompt_id, n in list(truncated.items())[:10])
        log.warning(
            "truncate_to_context: new tokens capped to the %d positions of %s for %d prompt(s): %s%s",
            limit,
            model,
            len(truncated),
            shown,
            ", ..." if len(truncated) > 10 else "",
        )
    return fitted


def cache_argument(body: Any) -> str:
    """The name under which a backbone's forward takes the KV cache: `cache` (transformers >= 5.24),
    or `past_key_values` for models (remote code) written against the earlier name."""
    parameters = inspect.signature(body.forward).parameters
    return "cache" if "cache" in parameters or "past_key_values" not in parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward pass returned, under its current attribute (`cache`) or the earlier one."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


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


def eos_token_ids(model: CausalLM, tokenizer: Tokenizer) -> list[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, (list, tuple)) else [configured]:
        if value is not None:
            ids.add(int(value))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


@dataclass
class _Outputs:
    """Per-request result buffers on the device, written at (request, row step)."""

    tokens: Tensor
    entropy: Tensor
    logprob: Tensor
    rank: Tensor
    topk_ids: Tensor
    topk_logprobs: Tensor
    lengths: Tensor
    ended_by_eos: Tensor

    @classmethod
    def allocate(cls, rows: int, steps: int, k: int, pad_id: int, device: torch.device) -> _Outputs:
        return cls(
            tokens=torch.full((rows, steps), pad_id, dtype=torch.long, device=device),
            entropy=torch.zeros((rows, steps), dtype=torch.float32, device=device),
            logprob=torch.zeros((rows, steps), dtype=torch.float32, device=device),
            rank=torch.zeros((rows, steps), dtype=torch.int32, device=device),
            topk_ids=torch.zeros((rows, steps, k), dtype=torch.int32, device=device),
            topk_logprobs=torch.zeros((rows, steps, k), dtype=torch.float32, device=device),
            lengths=torch.full((rows,), steps, dtype=torch.long, device=device),
            ended_by_eos=torch.zeros(rows, dtype=torch.bool, device=device),
        )


class _Decoder:
    """One model's decode state: samples, records metrics and reports finished rows."""

    def __init__(
        self,
        model: CausalLM,
        unembed: Unembedding,
        requests: Sequence[GenerationRequest],
        params: SamplingParams,
        eos_ids: Sequence[int],
        pad_id: int,
        n_alternatives: int,
        progress: tqdm | None,
    ) -> None:
        self.model, self.unembed, self.requests, self.params = model, unembed, requests, params
        self.body = backbone(model)
        self.cache_argument = cache_argument(self.body)
        self.sliding = has_sliding_window(model)
        self.device = next(model.parameters()).device
        self.pad_id, self.progress = pad_id, progress
        self.eos = torch.tensor(list(eos_ids), dtype=torch.long, device=self.device)
        self.seeds = torch.tensor([r.seed for r in requests], dtype=torch.long, device=self.device)
        budgets = [new_token_budget(r, params.max_new_tokens) for r in requests]
        self.budgets = torch.tensor(budgets, dtype=torch.long, device=self.device)
        self.steps = max(budgets, default=0)  # the longest answer any request may have
        self.k = min(n_alternatives, unembed.weight.shape[0])
        self.out = _Outputs.allocate(len(requests), self.steps, self.k, pad_id, self.device)

    def step(self, hidden: Tensor, request: Tensor, row_step: Tensor) -> tuple[Tensor, Tensor]:
        """Sample the next token of each row, record its metrics; returns (tokens, finished)."""
        out = self.out
        logits = self.unembed(hidden)
        chosen = sample_tokens(logits, self.params, self.seeds[request], row_step)
        m: TokenMetrics = metrics_from_logits(logits, chosen, self.k)
        out.tokens[request, row_step] = chosen
        out.entropy[request, row_step] = m.entropy
        out.logprob[request, row_step] = m.logprob
        out.rank[request, row_step] = m.rank
        out.topk_ids[request, row_step] = m.topk_ids
        out.topk_logprobs[request, row_step] = m.topk_logprobs
        is_eos = torch.isin(chosen, self.eos)
        finished = is_eos | (row_step == self.budgets[request] - 1)
        out.lengths[request[finished]] = row_step[finished] + 1
        out.ended_by_eos[request[is_eos]] = True
        if self.progress is not None:
            self.progress.update(int(request.numel()))
        return chosen, finished

    def prefill(self, indices: Sequence[int]) -> tuple[list[tuple[Tensor, Tensor]], Tensor, Tensor, Tensor, int]:
        """Forward prompts (left padded); returns (per-layer keys and values, mask, last hidden,
        next positions, width). Samples of one prompt share a prompt: it is forwarded once."""
        prompts = [self.requests[i].prompt_ids for i in indices]
        unique = list(dict.fromkeys(prompts))
        inverse = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        ids, mask = pad(unique, self.pad_id, "left", self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        layers = [(layer.keys[inverse], layer.values[inverse]) for layer in output_cache(out).layers]
        hidden = out.last_hidden_state[inverse, -1]
        return layers, mask[inverse], hidden, positions[inverse, -1] + 1, ids.shape[1]

    @torch.no_grad()
    def run_wave(self, queue: deque[int], slots: int) -> None:
        """Decode the longest queued prompts in `slots` rows of a preallocated KV cache.

        A row that finishes hands its slot to the next queued prompt (prefilled on its own and
        written into the cache right before the current column), so the batch stays full; once
        the cache has no room for a whole new answer, finished rows just leave the batch.
        """
        steps, device = self.steps, self.device
        first = [queue.popleft() for _ in range(min(slots, len(queue)))]
        prompt_layers, mask, hidden, position, width = self.prefill(first)
        # Twice the answer length leaves room for prompts joining during the first `steps` steps.
        columns = width + 2 * steps
        cache = build_cache(self.model, prompt_layers, columns, self.sliding)
        full_mask = torch.zeros((len(first), columns), dtype=torch.long, device=device)
        full_mask[:, :width] = mask
        request = torch.tensor(first, dtype=torch.long, device=device)
        row_step = torch.zeros_like(request)
        column = width
        while request.numel():
            chosen, finished = self.step(hidden, request, row_step)
            row_step = row_step + 1
            free = finished.nonzero().squeeze(1)
            while free.numel() and queue and not self.sliding and column + steps <= columns:
                # Refill finished slots with queued prompts (shorter than `column`: the queue is
                # sorted longest first and the first prompt set the width).
                take = free[: len(queue)]
                joining = [queue.popleft() for _ in range(int(take.numel()))]
                new_layers, new_mask, new_hidden, new_position, new_width = self.prefill(joining)
                for layer, (keys, values) in zip(preallocated_layers(cache), new_layers, strict=True):
                    layer.write_rows(take, keys, values)
                full_mask[take] = 0
                full_mask[take, column - new_width : column] = new_mask
                request[take] = torch.tensor(joining, dtype=torch.long, device=device)
                row_step[take] = 0
                position[take] = new_position
                first_tokens, first_finished = self.step(new_hidden, request[take], row_step[take])
                chosen[take], finished[take] = first_tokens, first_finished
                row_step[take] = 1
                free = take[first_finished]  # rows done at their first token free their slot again
                finished[take[~first_finished]] = False
            if bool(finished.any()):  # one sync per step, not per token
                kept = (~finished).nonzero().squeeze(1)
                if self.sliding:
                    cache.batch_select_indices(kept)
                else:
                    for layer in preallocated_layers(cache):
                        layer.keep_rows(kept)
                request, row_step, chosen, position = request[kept], row_step[kept], chosen[kept], position[kept]
                full_mask = full_mask[kept]
                if not request.numel():
                    break
            full_mask[:, column] = 1
            out = self.body(
                input_ids=chosen.unsqueeze(1),
                attention_mask=full_mask[:, : column + 1],
                position_ids=position.unsqueeze(1),
                use_cache=True,
                **{self.cache_argument: cache},
            )
            hidden = out.last_hidden_state[:, -1]
            position = position + 1
            column += 1

    def results(self) -> list[Generation]:
        out = self.out
        lengths = out.lengths.cpu().numpy()
        arrays = [
            t.cpu().numpy() for t in (out.tokens, out.entropy, out.logprob, out.rank, out.topk_ids, out.topk_logprobs)
        ]
        eos = out.ended_by_eos.cpu().numpy()
        generations = []
        for row, request in enumerate(self.requests):
            tok, ent, lp, rk, tki, tkl = (a[row, : int(lengths[row])] for a in arrays)
            generations.append(Generation(request, tok, "eos" if eos[row] else "length", ent, lp, rk, tki, tkl))
        return generations


def generate(
    model: CausalLM,
    tokenizer: Tokenizer,
    requests: Sequence[GenerationRequest],
    params: SamplingParams,
    batch_size: int,
    n_alternatives: int | None = None,
    show_progress: bool = True,
    eos_ids: Sequence[int] | None = None,
    *,
    top_k: int | None = None,
) -> list[Generation]:
    """Generate for all requests in length-sorted batches; results come back in request order.

    `eos_ids` (default: the model's and tokenizer's end-of-sequence tokens) end a sequence.
    `n_alternatives` (default 5) most probable tokens are recorded per step (`top_k`: its
    deprecated name). A request generates at most params.max_new_tokens tokens, or its own
    smaller `max_new_tokens`; prompt + that must fit the model's positions (see fit_to_context).
    """
    n_alternatives = renamed_top_k(n_alternatives, top_k, "generate")
    fit_to_context(requests, params.max_new_tokens, max_positions(model))
    unembed = Unembedding(model)
    eos_ids = list(eos_ids) if eos_ids is not None else eos_token_ids(model, tokenizer)
    pad_id = pad_id_of(tokenizer)
    progress = tqdm(
        total=sum(new_token_budget(r, params.max_new_tokens) for r in requests),
        unit="tok",
        desc="generating",
        disable=not show_progress,
        mininterval=2.0,
    )
    decoder = _Decoder(model, unembed, requests, params, eos_ids, pad_id, n_alternatives, progress)
    if decoder.sliding and batch_size > 1:
        # Windows count cache columns, and left padding would shift them by a row's padding.
        logging.getLogger(__name__).warning("sliding-window attention: generating one sequence at a time")
        batch_size = 1
    # Longest prompts first: a joining prompt must fit before the current cache column.
    queue = deque(int(i) for i in np.argsort([-len(r.prompt_ids) for r in requests], kind="stable"))
    while queue:
        decoder.run_wave(queue, batch_size)
    progress.total = progress.n  # rows that stopped early leave part of their budget unused
    progress.close()
    return decoder.results()
