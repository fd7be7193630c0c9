"""High-level steps, callable from a notebook or from the workflow's rule scripts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from tokenscope.chat import ScoreSpan, generation_prompt_ids, teacher_forced_ids
from tokenscope.generate import GenerationRequest, generate
from tokenscope.metrics import TokenMetrics, Unembedding, check_unembedding
from tokenscope.models import LoadOptions, load_prepared
from tokenscope.prompts import Prompt, load_prompt_set
from tokenscope.sampling import SamplingParams, sequence_seed
from tokenscope.score import score_sequences
from tokenscope.tables import ScoredSequence, generation_table, token_table
from tokenscope.token_text import TokenTable
from tokenscope.transforms import splice_insertion


def load_checked(model_dir: str | Path, options: LoadOptions) -> tuple[Any, Any]:
    model, tokenizer = load_prepared(model_dir, options)
    check_unembedding(model, Unembedding(model), len(tokenizer))
    return model, tokenizer


def generation_requests(tokenizer: Any, prompts: Sequence[Prompt], n_samples: int, seed: int) -> list[GenerationRequest]:
    requests = []
    for prompt in prompts:
        ids, inserted = splice_insertion(
            tokenizer, prompt.messages, prompt.insertion, generation_prompt_ids(tokenizer, prompt.messages)
        )
        for sample in range(n_samples):
            requests.append(
                GenerationRequest(prompt.id, sample, sequence_seed(seed, prompt.id, sample), tuple(ids), inserted)
            )
    return requests


def run_generation(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    model_name: str,
    prompt_set: str,
    n_samples: int = 1,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    batch_size: int = 16,
    top_k: int = 5,
    show_progress: bool = True,
) -> tuple[pa.Table, pa.Table]:
    """Generate for every prompt and sample; returns (generations table, per-token table)."""
    params = SamplingParams.resolve(getattr(model, "generation_config", None), sampling or {})
    requests = generation_requests(tokenizer, prompts, n_samples, seed)
    generations = generate(model, tokenizer, requests, params, batch_size, top_k, show_progress)
    gen_table = generation_table(
        model=model_name,
        prompt_set=prompt_set,
        prompt_ids=[g.request.prompt_id for g in generations],
        samples=[g.request.sample for g in generations],
        seeds=[g.request.seed for g in generations],
        prompt_token_ids=[g.request.prompt_ids for g in generations],
        token_ids=[g.token_ids for g in generations],
        texts=tokenizer.batch_decode([g.token_ids.tolist() for g in generations], skip_special_tokens=True),
        finish_reasons=[g.finish_reason for g in generations],
        inserted=[g.request.inserted for g in generations],
    )
    sequences = [
        ScoredSequence(
            prompt_id=g.request.prompt_id,
            sample=g.request.sample,
            token_ids=np.concatenate([np.asarray(g.request.prompt_ids, dtype=np.int64), g.token_ids]),
            score_start=len(g.request.prompt_ids),
            prompt_length=len(g.request.prompt_ids),
        )
        for g in generations
    ]
    metrics = TokenMetrics(
        *(
            torch.from_numpy(np.concatenate([getattr(g, field) for g in generations]))
            for field in ("entropy", "logprob", "rank", "topk_ids", "topk_logprobs")
        )
    )
    tokens = token_table(
        model=model_name, source=model_name, prompt_set=prompt_set, sequences=sequences,
        metrics=metrics, vocab=TokenTable.from_tokenizer(tokenizer),
    )
    return gen_table, tokens


def score_token_sequences(
    model: Any,
    tokenizer: Any,
    sequences: Sequence[ScoredSequence],
    *,
    model_name: str,
    source: str,
    prompt_set: str,
    batch_size: int = 8,
    top_k: int = 5,
    chunk_rows: int = 512,
    show_progress: bool = True,
) -> pa.Table:
    """Teacher-forced metrics of given token sequences under `model`, as a per-token table."""
    metrics = score_sequences(
        model,
        [s.token_ids.tolist() for s in sequences],
        [s.score_start for s in sequences],
        batch_size=batch_size,
        top_k=top_k,
        chunk_rows=chunk_rows,
        pad_id=tokenizer.pad_token_id or 0,
        show_progress=show_progress,
    )
    return token_table(
        model=model_name, source=source, prompt_set=prompt_set, sequences=sequences,
        metrics=metrics, vocab=TokenTable.from_tokenizer(tokenizer),
    )


def reference_sequences(tokenizer: Any, prompts: Sequence[Prompt], span: ScoreSpan = "answer") -> list[ScoredSequence]:
    """The chats with their reference answers appended, for the prompts that have one."""
    sequences = []
    for prompt in prompts:
        if prompt.reference is None:
            continue
        ids, start, prompt_length = teacher_forced_ids(tokenizer, prompt.messages, prompt.reference, span)
        ids, inserted = splice_insertion(tokenizer, prompt.messages, prompt.insertion, ids)
        if inserted is not None:
            added = inserted[1] - inserted[0]
            prompt_length += added
            start = start + added if start > inserted[0] else start
        sequences.append(ScoredSequence(prompt.id, 0, np.asarray(ids, dtype=np.int64), start, prompt_length))
    return sequences


def run_teacher_forcing(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    model_name: str,
    prompt_set: str,
    span: ScoreSpan = "answer",
    **scoring: Any,
) -> pa.Table:
    """Score the prompts' reference answers (the seed's process_teacher_forced, fixed)."""
    sequences = reference_sequences(tokenizer, prompts, span)
    if not sequences:
        raise ValueError(f"prompt set {prompt_set!r} has no 'reference' answers to score")
    return score_token_sequences(
        model, tokenizer, sequences, model_name=model_name, source="reference", prompt_set=prompt_set, **scoring
    )


__all__ = [
    "load_checked",
    "load_prompt_set",
    "run_generation",
    "run_teacher_forcing",
    "score_token_sequences",
    "reference_sequences",
    "generation_requests",
]
