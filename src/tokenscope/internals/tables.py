"""Internals analyses over a prompt set, as per-token tables (column meanings: docs/schema.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tokenscope.errors import ConfigError
from tokenscope.inputs.batching import pad_id_of
from tokenscope.inputs.chat import generation_prompt_ids
from tokenscope.inputs.prompts import Prompt
from tokenscope.inputs.sequences import generation_table_sequences, reference_sequences
from tokenscope.inputs.transforms import splice_insertion
from tokenscope.internals.measures import (
    attention_received,
    convergence_distances,
    depth_states,
    logit_lens,
    marker_attention,
    marker_mask,
)
from tokenscope.internals.options import AttentionPositionsOptions, DepthOptions, MarkerAttentionOptions
from tokenscope.model.loading import max_positions
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.model.types import CausalLM, Tokenizer
from tokenscope.schema_version import SCHEMA_VERSION

log = logging.getLogger(__name__)


def _schema(name: str, fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema(fields, metadata={"tokenscope_schema": SCHEMA_VERSION, "tokenscope_table": name})


_KEYS = [("model", pa.string()), ("prompt_set", pa.string()), ("prompt_id", pa.string())]
MARKER_ATTENTION_SCHEMA = _schema(
    "marker_attention",
    [
        *_KEYS,
        ("sample", pa.int32()),
        ("step", pa.int32()),
        ("position", pa.int32()),
        ("token", pa.string()),
        ("entropy", pa.float32()),
        ("marker_share", pa.float32()),
        ("n_marker_tokens", pa.int32()),
    ],
)
ATTENTION_POSITIONS_SCHEMA = _schema(
    "attention_positions",
    [
        *_KEYS,
        ("layer", pa.int32()),
        ("head", pa.int32()),
        ("position", pa.int32()),
        ("source_position", pa.int32()),
        ("in_span", pa.bool_()),
        ("token", pa.string()),
        ("attention_received", pa.float32()),
    ],
)
CONVERGENCE_SCHEMA = _schema(
    "convergence",
    [
        *_KEYS,
        ("depth", pa.int32()),
        ("depth_kind", pa.string()),
        ("position", pa.int32()),
        ("in_span", pa.bool_()),
        ("token", pa.string()),
        ("distance", pa.float32()),
    ],
)
LOGIT_LENS_SCHEMA = _schema(
    "logit_lens",
    [
        *_KEYS,
        ("layer", pa.int32()),
        ("position", pa.int32()),
        ("in_span", pa.bool_()),
        ("token", pa.string()),
        ("entropy", pa.float32()),
        ("top_token_id", pa.int32()),
        ("top_token", pa.string()),
        ("top_prob", pa.float32()),
    ],
)


@dataclass(frozen=True)
class TableLabels:
    """The model and prompt set whose rows a table holds (its model and prompt_set columns)."""

    model: str
    prompt_set: str


@dataclass(frozen=True)
class ProbeSequence:
    """A prompt's token ids as the internals passes see them, with the inserted span if any."""

    prompt_id: str
    token_ids: np.ndarray
    inserted: tuple[int, int] | None

    def in_span(self) -> np.ndarray:
        positions = np.arange(len(self.token_ids))
        if self.inserted is None:
            return np.zeros(len(positions), dtype=bool)
        return (positions >= self.inserted[0]) & (positions < self.inserted[1])

    def source_positions(self) -> np.ndarray:
        """Position of each token in the untransformed sequence (-1 inside the inserted span)."""
        positions = np.arange(len(self.token_ids))
        if self.inserted is None:
            return positions
        start, end = self.inserted
        return np.where(positions < start, positions, np.where(positions >= end, positions - (end - start), -1))


def require_probe_context(sequences: Sequence[ProbeSequence], model: CausalLM, model_name: str) -> None:
    """Refuse a prompt (with its inserted tokens and reference answer) longer than the model's positions."""
    limit = max_positions(model)
    if limit is None:
        return
    for sequence in sequences:
        if len(sequence.token_ids) > limit:
            raise ConfigError(
                f"prompt {sequence.prompt_id!r}: {len(sequence.token_ids)} tokens (with inserted tokens and "
                f"reference answer) exceed the {limit} positions of model {model_name!r}; "
                "shorten the prompt or insert fewer tokens"
            )


def probe_sequences(
    tokenizer: Tokenizer, prompts: Sequence[Prompt], prompt_ids: Sequence[str] | None = None
) -> list[ProbeSequence]:
    """Each prompt's chat with its reference answer when it has one (else the generation prompt)."""
    chosen = [p for p in prompts if prompt_ids is None or p.id in prompt_ids]
    if prompt_ids is not None and len(chosen) != len(set(prompt_ids)):
        missing = sorted(set(prompt_ids) - {p.id for p in chosen})
        raise ConfigError(f"prompt id(s) {missing} not in the prompt set")
    with_reference = {s.prompt_id: s for s in reference_sequences(tokenizer, [p for p in chosen if p.reference])}
    sequences = []
    for prompt in chosen:
        # The reference sequence carries the same insertion at the same place as the prompt.
        prompt_only, inserted = splice_insertion(
            tokenizer, prompt.messages, prompt.insertion, generation_prompt_ids(tokenizer, prompt.messages)
        )
        ids = with_reference[prompt.id].token_ids if prompt.id in with_reference else prompt_only
        sequences.append(ProbeSequence(prompt.id, np.asarray(ids, dtype=np.int64), inserted))
    return sequences


def _strings(vocab: VocabularyStrings, ids: np.ndarray) -> list[str]:
    return vocab.readable(ids, np.array([0])).to_pylist()


def _flat(parts: Sequence[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if len(parts) else np.zeros(0, dtype)


def _standalone_strings(vocab: VocabularyStrings, ids: np.ndarray) -> np.ndarray:
    """Each token decoded on its own; the raw piece where that is a partial UTF-8 character."""
    readable = np.asarray(vocab.readable(ids, np.arange(ids.size)).to_pylist(), dtype=object)
    pieces = np.asarray(vocab.piece_array(ids).to_pylist(), dtype=object)
    partial = np.char.find(readable.astype(str), "\ufffd") >= 0
    return np.where(partial, pieces, readable)


def run_marker_attention(
    model: CausalLM,
    tokenizer: Tokenizer,
    generations: pd.DataFrame,
    tokens: pd.DataFrame,
    labels: TableLabels,
    options: MarkerAttentionOptions = MarkerAttentionOptions(),
    *,
    show_progress: bool = True,
) -> pa.Table:
    """Per generated token: share of attention (mean over heads and chosen layers) on marker tokens.

    `generations` is the generations table, `tokens` the per-token table of the same run (its
    entropy is carried over so one file draws the figure).
    """
    markers = options.markers
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    sequences = [s.token_ids for s in generation_table_sequences(generations)]
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    strings = vocab.readable(_flat(sequences, np.int64), offsets).to_pylist()
    masks = [marker_mask(strings[o : o + n], markers) for o, n in zip(offsets, lengths, strict=True)]
    texts = ["".join(strings[o : o + n]) for o, n in zip(offsets, lengths, strict=True)]
    absent = [marker for marker in markers if not any(marker in text for text in texts)]
    if absent:
        log.warning(
            "marker(s) %s never occur in the %d sequence(s) of model %s on prompt set %s%s",
            ", ".join(repr(m) for m in absent),
            len(texts),
            labels.model,
            labels.prompt_set,
            ": their attention share is 0 at every step" if len(absent) == len(markers) else "",
        )
    prompt_lengths = generations["prompt_token_ids"].map(len).to_numpy()
    counts = lengths - prompt_lengths
    shares = marker_attention(
        model,
        sequences,
        masks,
        list(prompt_lengths - 1),
        options=options,
        pad_id=pad_id_of(tokenizer),
        show_progress=show_progress,
    )
    # Query p - 1 produced token p: the last query produced nothing and is dropped.
    keys = ["prompt_id", "sample", "step"]
    frame = pd.DataFrame(
        {
            "prompt_id": np.repeat(generations["prompt_id"].to_numpy(), counts),
            "sample": np.repeat(generations["sample"].to_numpy(), counts).astype(np.int32),
            "step": (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32),
            "marker_share": _flat([s[:c] for s, c in zip(shares, counts, strict=True)], np.float32),
            "n_marker_tokens": _flat(
                [np.cumsum(m)[p - 1 : p - 1 + c] for m, p, c in zip(masks, prompt_lengths, counts, strict=True)],
                np.int32,
            ),
        }
    )
    # Position, token string and entropy of each generated token come from the per-token table.
    frame = frame.merge(tokens[[*keys, "position", "token", "entropy"]], on=keys, how="left", validate="one_to_one")
    frame = frame.assign(model=labels.model, prompt_set=labels.prompt_set)
    return pa.Table.from_pandas(
        frame[MARKER_ATTENTION_SCHEMA.names], schema=MARKER_ATTENTION_SCHEMA, preserve_index=False
    )


def run_attention_positions(
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    labels: TableLabels,
    options: AttentionPositionsOptions = AttentionPositionsOptions(),
) -> pa.Table:
    """Mean attention each position receives (queries q >= k) for the (layer, head) pairs of `options`."""
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    frames = []
    heads = options.heads
    sequences = probe_sequences(tokenizer, prompts, options.prompt_ids)
    require_probe_context(sequences, model, labels.model)
    for sequence in sequences:
        received = attention_received(model, sequence.token_ids.tolist(), heads)  # [pairs, T]
        n = len(sequence.token_ids)
        frames.append(
            pd.DataFrame(
                {
                    "model": labels.model,
                    "prompt_set": labels.prompt_set,
                    "prompt_id": sequence.prompt_id,
                    "layer": np.repeat([layer for layer, _ in heads], n).astype(np.int32),
                    "head": np.repeat([head for _, head in heads], n).astype(np.int32),
                    "position": np.tile(np.arange(n), len(heads)).astype(np.int32),
                    "source_position": np.tile(sequence.source_positions(), len(heads)).astype(np.int32),
                    "in_span": np.tile(sequence.in_span(), len(heads)),
                    "token": np.tile(np.asarray(_strings(vocab, sequence.token_ids), dtype=object), len(heads)),
                    "attention_received": received.reshape(-1),
                }
            )
        )
    return pa.Table.from_pandas(
        pd.concat(frames, ignore_index=True), schema=ATTENTION_POSITIONS_SCHEMA, preserve_index=False
    )


def run_depth(
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    labels: TableLabels,
    options: DepthOptions = DepthOptions(),
    *,
    chunk_rows: int = 512,
) -> tuple[pa.Table, pa.Table | None]:
    """Hidden-state convergence (and, for layered models, the logit lens) of each prompt's tokens;
    the logit lens unembeds `chunk_rows` states at a time (memory only).

    Returns (convergence table, logit-lens table or None for recurrent-depth models).
    """
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    convergence, lens_frames = [], []
    recurrent = options.recurrent_depth
    sequences = probe_sequences(tokenizer, prompts, options.prompt_ids)
    require_probe_context(sequences, model, labels.model)
    for sequence in sequences:
        states = depth_states(model, sequence.token_ids.tolist(), recurrent)
        n_depth, n = states.shape[:2]
        tokens = np.asarray(_strings(vocab, sequence.token_ids), dtype=object)
        common = {
            "model": labels.model,
            "prompt_set": labels.prompt_set,
            "prompt_id": sequence.prompt_id,
            "position": np.tile(np.arange(n), n_depth).astype(np.int32),
            "in_span": np.tile(sequence.in_span(), n_depth),
            "token": np.tile(tokens, n_depth),
        }
        depth = np.repeat(np.arange(n_depth), n).astype(np.int32)
        convergence.append(
            pd.DataFrame(
                {
                    **common,
                    "depth": depth,
                    "depth_kind": "iteration" if recurrent else "layer",
                    "distance": convergence_distances(states).reshape(-1),
                }
            )
        )
        if recurrent is None:
            lens = logit_lens(model, states, chunk_rows)
            top_ids = lens.top_ids.reshape(-1)
            lens_frames.append(
                pd.DataFrame(
                    {
                        **common,
                        "layer": depth,
                        "entropy": lens.entropy.reshape(-1),
                        "top_token_id": top_ids.astype(np.int32),
                        "top_token": _standalone_strings(vocab, top_ids),
                        "top_prob": lens.top_probs.reshape(-1),
                    }
                )
            )
        del states
    conv_table = pa.Table.from_pandas(
        pd.concat(convergence, ignore_index=True)[CONVERGENCE_SCHEMA.names],
        schema=CONVERGENCE_SCHEMA,
        preserve_index=False,
    )
    lens_table = (
        None
        if recurrent
        else pa.Table.from_pandas(
            pd.concat(lens_frames, ignore_index=True)[LOGIT_LENS_SCHEMA.names],
            schema=LOGIT_LENS_SCHEMA,
            preserve_index=False,
        )
    )
    return conv_table, lens_table
