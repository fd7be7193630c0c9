"""Batched, seeded generation that scores its own tokens from the logits it computes anyway.

A hand-written decode loop over the model's backbone with a KV cache: each step unembeds only the
last position in fp32, samples (see `sampling`), and records the raw-logit metrics of the chosen
token, so a model's own generations need no second forward pass. The KV cache is preallocated;
a row that finishes hands its slot to the next queued prompt, so the batch stays full.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from tokenscope.errors import ConfigError, ModelError
from tokenscope.generation.kv_cache import (
    PreallocatedLayer,
    PrefilledPrompts,
    attention_windows,
    build_cache,
    model_label,
    preallocated_layers,
)
from tokenscope.generation.options import GenerationOptions
from tokenscope.generation.sampling import SamplingParams, sample_with_metrics
from tokenscope.inputs.batching import pad, pad_id_of, padding_bounded_groups
from tokenscope.model.anatomy import Unembedding, backbone
from tokenscope.model.loading import max_positions
from tokenscope.model.types import CausalLM, Tokenizer
from tokenscope.scoring.catalogue import GENERATED_FIELDS
from tokenscope.scoring.formulas import metrics_from_logits
from tokenscope.scoring.options import ScoringOptions

log = logging.getLogger(__name__)

# Prompts forwarded together at prefill: at most 10% padding, at most 8192 padded tokens per forward
# (bounds the prefill's activations; thousands of tokens already keep a GPU busy).
_PREFILL_PADDING = 0.1
_PREFILL_TOKENS = 8192


@dataclass(frozen=True)
class GenerationRequest:
    prompt_id: str
    sample: int
    seed: int
    prompt_ids: tuple[int, ...]
    inserted: tuple[int, int] | None = None  # span of a prompt transform's tokens in prompt_ids
    max_new_tokens: int | None = None  # this request's own cap (fit_to_context), below the sampling one


@dataclass(frozen=True)
class DecodeOptions:
    """How the decode loop runs: `batch_size` rows decoded together (speed and memory only),
    `n_alternatives` most probable tokens recorded per step, a progress bar with `show_progress`,
    `eos_ids` ending a sequence (None: the model's and tokenizer's end-of-sequence tokens). The
    defaults are GenerationOptions' and ScoringOptions'."""

    batch_size: int = GenerationOptions.batch_size
    n_alternatives: int = ScoringOptions.n_alternatives
    show_progress: bool = True
    eos_ids: tuple[int, ...] | None = None


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
    """One generated sequence and the metrics of each of its tokens (numpy, on the CPU): `metrics`
    holds the catalogue's recorded fields (scoring.catalogue.GENERATED_FIELDS), also readable as
    attributes (`generation.entropy`)."""

    request: GenerationRequest
    token_ids: np.ndarray  # [n] int64, eos included when generated
    finish_reason: str  # "eos" or "length"
    metrics: dict[str, np.ndarray]  # field -> [n] or [n, k]

    def __getattr__(self, name: str) -> np.ndarray:
        # Only reached for names that are not attributes; __dict__ may lack metrics while unpickling.
        try:
            return self.__dict__["metrics"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no attribute or metric {name!r}") from None


def eos_token_ids(model: CausalLM, tokenizer: Tokenizer) -> list[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, (list, tuple)) else [configured]:
        if value is not None:
            ids.add(int(value))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def cache_margin(width: int, steps: int) -> int:
    """Spare KV cache columns beyond the width + steps - 1 a row can fill (see `_Decoder.run_wave`).

    The cache is compacted (its leading columns, masked out for every row, dropped) only when its
    last column is reached, and each compaction then drops at least margin + 1 columns: with a
    sixteenth of width + steps, a compaction (one copy of the filled cache) happens at most once
    every (width + steps) / 16 steps, while every step reads the whole filled cache anyway.
    """
    return (width + steps) // 16


class _Results:
    """Host buffers of the rows of one wave, written at (slot, row step) as each step's results
    arrive; a finished row's slot is copied out as a Generation and reused by the next prompt."""

    def __init__(self, slots: int, steps: int, k: int) -> None:
        self.tokens = np.zeros((slots, steps), dtype=np.int64)
        self.metrics = {
            f.name: np.zeros((slots, steps, k) if f.per_alternative else (slots, steps), f.value_type.to_pandas_dtype())
            for f in GENERATED_FIELDS
        }

    def write(self, slots: np.ndarray, steps: np.ndarray, packed: np.ndarray, k: int) -> np.ndarray:
        """Store one step of `slots` (packed by `_Decoder.step`: the token, then each recorded
        field, one column or k); returns which rows chose an end token."""
        self.tokens[slots, steps] = packed[:, 0]
        column = 1
        for buffer in self.metrics.values():
            if buffer.ndim == 3:
                buffer[slots, steps] = packed[:, column : column + k]
                column += k
            else:
                buffer[slots, steps] = packed[:, column]
                column += 1
        return packed[:, -1] != 0

    def generation(self, request: GenerationRequest, slot: int, length: int, eos: bool) -> Generation:
        return Generation(
            request,
            self.tokens[slot, :length].copy(),
            "eos" if eos else "length",
            {name: buffer[slot, :length].copy() for name, buffer in self.metrics.items()},
        )


@dataclass
class _Rows:
    """The per-row state of the batch rows of a wave, row for row: host bookkeeping and device
    tensors. A new per-row value is one field here and its first value in `_Decoder.new_rows`:
    `take` and `put` carry every field (host arrays by host indices, tensors by device ones)."""

    # on the host
    request: np.ndarray  # index into the requests
    slot: np.ndarray  # row of the wave's _Results
    step: np.ndarray  # tokens generated so far
    budget: np.ndarray  # new tokens allowed (new_token_budget)
    start: np.ndarray  # first cache column of the row's prompt (earlier columns are masked out)
    # on the device
    seed: Tensor  # the sampler's seed (the request's)
    sampler_step: Tensor  # `step` on the device, for the sampler
    token: Tensor  # the last token chosen, the next forward's input (set by the row's first step)
    position: Tensor  # position of the next token
    mask: Tensor  # [rows, cache columns] attention mask: the prompt's columns and the tokens' so far

    def take(self, rows: np.ndarray, rows_on_device: Tensor) -> _Rows:
        """The rows `rows` (the same indices on the host and on the device) of every field."""
        taken: dict[str, Any] = {name: value[_side(value, rows, rows_on_device)] for name, value in self._values()}
        return _Rows(**taken)

    def put(self, rows: np.ndarray, rows_on_device: Tensor, new: _Rows) -> None:
        """Overwrite the rows `rows` (on the host and on the device) of every field with `new`'s."""
        for name, value in self._values():
            value[_side(value, rows, rows_on_device)] = getattr(new, name)

    def _values(self) -> list[tuple[str, np.ndarray | Tensor]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    def advance(self, token: Tensor) -> None:
        """After a step that chose `token` for every row."""
        self.token = token
        self.step += 1
        self.sampler_step = self.sampler_step + 1


def _side(value: np.ndarray | Tensor, rows: np.ndarray, rows_on_device: Tensor) -> np.ndarray | Tensor:
    """The row indices for `value`: `rows` for a host array, `rows_on_device` for a tensor."""
    return rows if isinstance(value, np.ndarray) else rows_on_device


@dataclass
class _Batch:
    """The rows of a wave and their KV cache: refilled, dropped and compacted together.

    `column` is the cache column of the rows' next token (every earlier one is filled, or masked
    out); the cache has `columns` (see `_Decoder.run_wave`).
    """

    rows: _Rows
    cache: Cache
    column: int
    columns: int
    to_device: Callable[[np.ndarray], Tensor]  # a host array's copy on the device (_Decoder.to_device)

    @property
    def layers(self) -> list[PreallocatedLayer]:
        return preallocated_layers(self.cache)

    def refill(self, slots: np.ndarray, groups: list[PrefilledPrompts], joining: _Rows) -> None:
        """Rows `slots` (of finished rows) take over the prefilled prompts `groups` (written right
        before the current column) and the state `joining` of their rows."""
        slots_on_device = self.to_device(slots)
        for group in groups:
            for layer, (keys, values) in zip(self.layers, group.layers, strict=True):
                layer.write_rows(slots_on_device[group.rows], keys[group.prompt_of_row], values[group.prompt_of_row])
        self.rows.put(slots, slots_on_device, joining)

    def drop(self, kept: np.ndarray) -> None:
        """Keep only the rows `kept`, in the cache as in every per-row field."""
        kept_on_device = self.to_device(kept)
        for layer in self.layers:
            layer.keep_rows(kept_on_device)
        self.rows = self.rows.take(kept, kept_on_device)

    def compact(self) -> None:
        """Drop the leading cache columns that every row masks out; the rest move left."""
        shift = int(self.rows.start.min())
        if shift < 1:  # every row fits in width + steps - 1 columns, so this is a bug
            raise RuntimeError("KV cache compaction found no column to drop")
        for layer in self.layers:
            layer.drop_leading(shift)
        mask, column = self.rows.mask, self.column
        mask[:, : column - shift] = mask[:, shift:column].clone()
        mask[:, column - shift :] = 0
        self.column -= shift
        self.rows.start -= shift


class _Decoder:
    """One model's decode state: samples, records metrics and reports finished rows."""

    def __init__(
        self,
        model: CausalLM,
        tokenizer: Tokenizer,
        requests: Sequence[GenerationRequest],
        params: SamplingParams,
        options: DecodeOptions,
        progress: tqdm | None,
    ) -> None:
        self.model, self.requests, self.params = model, requests, params
        self.unembed = Unembedding(model)
        eos_ids = options.eos_ids if options.eos_ids is not None else eos_token_ids(model, tokenizer)
        pad_id = pad_id_of(tokenizer)
        self.body = backbone(model)
        self.cache_argument = cache_argument(self.body)
        self.windows = attention_windows(model)  # per layer: its sliding window, None for full attention
        self.device = next(model.parameters()).device
        self.pad_id, self.progress = pad_id, progress
        self.eos = torch.tensor(list(eos_ids), dtype=torch.long, device=self.device)
        self.seeds = np.array([r.seed for r in requests], dtype=np.int64)
        self.budgets = np.array([new_token_budget(r, params.max_new_tokens) for r in requests], dtype=np.int64)
        self.prompt_lengths = np.array([len(r.prompt_ids) for r in requests], dtype=np.int64)
        self.steps = int(self.budgets.max(initial=0))  # the longest answer any request may have
        self.k = min(options.n_alternatives, self.unembed.weight.shape[0])
        self.compactions = 0  # times a wave dropped leading cache columns (tests read it)
        # Samples not yet decoding, per prompt, and the prefilled keys, values and last hidden state
        # of prompts that still have some (see prefill).
        self.queued_samples = Counter(r.prompt_ids for r in requests)
        self.kept: dict[tuple[int, ...], tuple[list[tuple[Tensor, Tensor]], Tensor]] = {}

    def to_device(self, values: np.ndarray) -> Tensor:
        """A host array on the device without waiting for the device (pinned, non-blocking copy)."""
        tensor = torch.from_numpy(np.ascontiguousarray(values))
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def step(self, hidden: Tensor, seeds: Tensor, row_step: Tensor) -> tuple[Tensor, np.ndarray]:
        """Sample the next token of each row; returns (tokens on the device, the step's results on
        the host: token, each recorded field of GENERATED_FIELDS (k columns for the alternatives),
        chose an end token).

        The results come over in one float64 array (exact for float32 values and for ids and
        ranks below 2^53): the one wait for the device per step.
        """
        logits = self.unembed(hidden)
        chosen, sampled = sample_with_metrics(logits, self.params, seeds, row_step)
        metrics = replace(metrics_from_logits(logits, chosen, self.k), **sampled)
        recorded = [getattr(metrics, f.name).double() for f in GENERATED_FIELDS]
        packed = torch.cat(
            [
                chosen.double().unsqueeze(1),
                *(values if values.dim() == 2 else values.unsqueeze(1) for values in recorded),
                torch.isin(chosen, self.eos).double().unsqueeze(1),
            ],
            dim=1,
        )
        if self.progress is not None:
            self.progress.update(int(chosen.numel()))
        return chosen, packed.cpu().numpy()

    def finish(
        self, results: _Results, rows: _Rows, packed: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[int, Generation]]]:
        """Record one step of `rows`; returns (which rows finished, their (request index, Generation))."""
        is_eos = results.write(rows.slot, rows.step, packed, self.k)
        finished = is_eos | (rows.step == rows.budget - 1)
        done = [
            (
                int(rows.request[i]),
                results.generation(
                    self.requests[rows.request[i]], int(rows.slot[i]), int(rows.step[i]) + 1, bool(is_eos[i])
                ),
            )
            for i in np.flatnonzero(finished)
        ]
        return finished, done

    def forward_prompts(self, prompts: list[tuple[int, ...]]) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        """Forward prompts left padded; returns (per-layer keys and values [prompts, heads, width,
        dim], each prompt's last hidden state [prompts, hidden])."""
        ids, mask = pad(prompts, self.pad_id, "left", self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # A cache without the config's layer types: sliding-window layers keep the whole prompt too
        # (the model's sliding-window masks are still built from its config).
        cache = DynamicCache()
        out = self.body(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{self.cache_argument: cache}
        )
        if (
            output_cache(out) is not cache
            or len(cache.layers) != len(self.windows)
            or not all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)
        ):
            raise ModelError(
                f"model {model_label(self.model)}: its forward does not fill one key/value cache layer per "
                "decoder layer (recurrent, state-space or shared-cache layers?), which tokenscope's decode loop needs"
            )
        return [(layer.keys, layer.values) for layer in cache.layers], out.last_hidden_state[:, -1]

    def prefill(self, indices: Sequence[int]) -> tuple[list[PrefilledPrompts], Tensor, Tensor]:
        """The prompts of requests `indices` forwarded; returns (their keys and values in groups,
        each row's last hidden state, each row's next position).

        Samples of one prompt share it: each distinct prompt is forwarded once, its keys and values
        are copied to each sample's row only inside the cache (see build_cache), and a prompt whose
        other samples are still queued keeps them (`self.kept`, one prompt's worth each) for their
        turn to join. Prompts of similar length are forwarded together, left padded (see
        padding_bounded_groups), so padding costs little compute or memory when lengths differ widely.
        """
        prompts = [self.requests[i].prompt_ids for i in indices]
        unique = list(dict.fromkeys(prompts))
        row_prompt = np.array([unique.index(p) for p in prompts], dtype=np.int64)
        # (members: indices into unique, per-layer keys and values, last hidden states) per forward
        forwarded = [(np.array([j]), *self.kept[p]) for j, p in enumerate(unique) if p in self.kept]
        fresh = np.array([j for j, p in enumerate(unique) if p not in self.kept], dtype=np.int64)
        for group in padding_bounded_groups([len(unique[j]) for j in fresh], _PREFILL_PADDING, _PREFILL_TOKENS):
            members = fresh[group]
            forwarded.append((members, *self.forward_prompts([unique[j] for j in members])))
        for prompt in prompts:
            self.queued_samples[prompt] -= 1
        groups: list[PrefilledPrompts] = []
        hidden = forwarded[0][2].new_empty((len(indices), forwarded[0][2].shape[-1]))
        for members, layers, member_hidden in forwarded:
            rows = np.flatnonzero(np.isin(row_prompt, members))
            member_position = np.empty(len(unique), dtype=np.int64)
            member_position[members] = np.arange(len(members))
            prompt_of_row = self.to_device(member_position[row_prompt[rows]])
            groups.append(PrefilledPrompts(list(layers), self.to_device(rows), prompt_of_row))
            hidden[self.to_device(rows)] = member_hidden[prompt_of_row]
            for position, j in enumerate(members.tolist()):
                prompt = unique[j]
                if not self.queued_samples[prompt]:
                    self.kept.pop(prompt, None)
                elif prompt not in self.kept:  # only the prompt's own columns (the last ones: left padding)
                    own = slice(layers[0][0].shape[2] - len(prompt), None)
                    self.kept[prompt] = (
                        [
                            (k[position : position + 1, :, own].clone(), v[position : position + 1, :, own].clone())
                            for k, v in layers
                        ],
                        member_hidden[position : position + 1].clone(),
                    )
        return groups, hidden, self.to_device(self.prompt_lengths[np.asarray(indices, dtype=np.int64)])

    def prompt_mask(self, indices: np.ndarray, end: int, columns: int) -> Tensor:
        """[rows, columns] attention mask of rows holding the prompts of requests `indices`, each
        prompt ending right before column `end`."""
        lengths = self.to_device(self.prompt_lengths[indices]).unsqueeze(1)
        column = torch.arange(columns, device=self.device)
        return ((column >= end - lengths) & (column < end)).long()

    def new_rows(self, indices: np.ndarray, slots: np.ndarray, end: int, columns: int, position: Tensor) -> _Rows:
        """Rows of the prompts of requests `indices`, in result `slots`, each prompt ending right
        before cache column `end` (of `columns`); `position`: each row's next position (prefill's)."""
        return _Rows(
            request=indices,
            slot=slots,
            step=np.zeros(len(indices), dtype=np.int64),
            budget=self.budgets[indices],
            start=end - self.prompt_lengths[indices],
            seed=self.to_device(self.seeds[indices]),
            sampler_step=torch.zeros(len(indices), dtype=torch.long, device=self.device),
            token=torch.empty(len(indices), dtype=torch.long, device=self.device),
            position=position,
            mask=self.prompt_mask(indices, end, columns),
        )

    def join(
        self, batch: _Batch, results: _Results, queue: deque[int], finished: np.ndarray
    ) -> Generator[tuple[int, Generation], None, np.ndarray]:
        """Refill the slots of `finished` rows with queued prompts (never longer than the current
        column, see run_wave), each prefilled and sampled once; yields (request index, Generation)
        of those done at their first token, whose slots are refilled in turn. Returns which rows
        are finished now (a refilled slot counts as its new row)."""
        free = np.flatnonzero(finished)
        while free.size and queue and self.prompt_lengths[queue[0]] <= batch.column:
            slots = free[: len(queue)]
            joining = np.array([queue.popleft() for _ in range(slots.size)], dtype=np.int64)
            groups, hidden, position = self.prefill(joining.tolist())
            rows = self.new_rows(joining, slots, batch.column, batch.columns, position)
            token, packed = self.step(hidden, rows.seed, rows.sampler_step)
            first_finished, done = self.finish(results, rows, packed)
            yield from done
            rows.advance(token)
            batch.refill(slots, groups, rows)
            finished[slots] = first_finished
            free = slots[first_finished]  # rows done at their first token free their slot again
        return finished

    def forward_tokens(self, batch: _Batch) -> Tensor:
        """Forward each row's last token at the batch's current column; returns each row's last
        hidden state."""
        rows = batch.rows
        rows.mask[:, batch.column] = 1
        out = self.body(
            input_ids=rows.token.unsqueeze(1),
            attention_mask=rows.mask[:, : batch.column + 1],
            position_ids=rows.position.unsqueeze(1),
            use_cache=True,
            **{self.cache_argument: batch.cache},
        )
        rows.position = rows.position + 1
        batch.column += 1
        return out.last_hidden_state[:, -1]

    @torch.no_grad()
    def run_wave(self, queue: deque[int], slots: int) -> Iterator[tuple[int, Generation]]:
        """Decode the longest queued prompts in `slots` rows of a preallocated KV cache; yields
        (request index, Generation) as rows finish.

        A row that finishes hands its slot to the next queued prompt (prefilled, or kept from an
        earlier sample's prefill, and written into the cache right before the current column), so
        the batch stays full until the queue is empty. The cache has width + steps - 1 +
        cache_margin columns, where width is the wave's first (longest) prompts' and steps the
        longest answer: a row holds at most its prompt and all but its last token, so dropping the
        leading columns that every row masks out (exact: positions are explicit and the mask says
        which columns count) always makes room when the last column is reached. The queue is sorted
        longest first, so a joining prompt is never longer than any row's filled columns and always
        fits before the current column. Sliding-window layers use the same refill and compaction,
        holding only their window (see PreallocatedLayer): each row's tokens fill contiguous
        columns, so a window of columns is a window of positions.
        """
        first = np.array([queue.popleft() for _ in range(min(slots, len(queue)))], dtype=np.int64)
        groups, hidden, position = self.prefill(first.tolist())
        width = int(self.prompt_lengths[first].max())
        columns = width + self.steps - 1 + cache_margin(width, self.steps)
        cache = build_cache(groups, len(first), width, columns, self.windows)
        rows = self.new_rows(first, np.arange(len(first)), width, columns, position)
        batch = _Batch(rows, cache, width, columns, self.to_device)
        results = _Results(len(first), self.steps, self.k)
        while True:
            token, packed = self.step(hidden, batch.rows.seed, batch.rows.sampler_step)
            finished, done = self.finish(results, batch.rows, packed)
            yield from done
            batch.rows.advance(token)
            finished = yield from self.join(batch, results, queue, finished)
            if finished.any():  # on the host: the step's one wait for the device is behind us
                if finished.all():
                    return
                batch.drop(np.flatnonzero(~finished))
            if batch.column == batch.columns:
                batch.compact()
                self.compactions += 1
            hidden = self.forward_tokens(batch)


def _decode(
    model: CausalLM,
    tokenizer: Tokenizer,
    requests: Sequence[GenerationRequest],
    params: SamplingParams,
    options: DecodeOptions,
) -> Iterator[tuple[int, Generation]]:
    """(request index, Generation) of every request, as rows finish."""
    fit_to_context(requests, params.max_new_tokens, max_positions(model))
    progress = tqdm(
        total=sum(new_token_budget(r, params.max_new_tokens) for r in requests),
        unit="tok",
        desc="generating",
        disable=not options.show_progress,
        mininterval=2.0,
    )
    decoder = _Decoder(model, tokenizer, requests, params, options, progress)
    # Longest prompts first: a joining prompt must fit before the current cache column.
    queue = deque(int(i) for i in np.argsort([-len(r.prompt_ids) for r in requests], kind="stable"))
    try:
        while queue:
            yield from decoder.run_wave(queue, options.batch_size)
        progress.total = progress.n  # rows that stopped early leave part of their budget unused
    finally:
        progress.close()


def iter_generations(
    model: CausalLM,
    tokenizer: Tokenizer,
    requests: Sequence[GenerationRequest],
    params: SamplingParams,
    options: DecodeOptions = DecodeOptions(),
) -> Iterator[Generation]:
    """Generate for all requests as `generate` does, yielding each Generation as its row finishes.

    The order is the order in which rows finish (longest prompts are decoded first): it depends
    on the batch size and the requests, not on chance. Device and host memory are bounded by the
    batch (KV cache and a batch x max_new_tokens result buffer), not by the number of requests.
    """
    for _, generation in _decode(model, tokenizer, requests, params, options):
        yield generation


def generate(
    model: CausalLM,
    tokenizer: Tokenizer,
    requests: Sequence[GenerationRequest],
    params: SamplingParams,
    options: DecodeOptions = DecodeOptions(),
) -> list[Generation]:
    """Generate for all requests in length-sorted batches; results come back in request order.

    `options` (see DecodeOptions): the batch size, the alternatives recorded per step, the
    progress bar and the end-of-sequence tokens. A request generates at most
    params.max_new_tokens tokens, or its own smaller `max_new_tokens`; prompt + that must fit the
    model's positions (see fit_to_context). `iter_generations` yields the same generations as they
    finish, without holding them all.
    """
    generations: list[Generation | None] = [None] * len(requests)
    for index, generation in _decode(model, tokenizer, requests, params, options):
        generations[index] = generation
    return cast("list[Generation]", generations)
