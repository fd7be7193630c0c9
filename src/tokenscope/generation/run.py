"""Generation over a prompt set: requests per prompt and sample, the decode loop, and its tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tokenscope.generation.decode import (
    DecodeOptions,
    Generation,
    GenerationRequest,
    fit_to_context,
    generate,
    iter_generations,
)
from tokenscope.generation.options import GenerationOptions
from tokenscope.generation.sampling import SamplingParams, sequence_seed
from tokenscope.inputs.chat import generation_prompt_ids
from tokenscope.inputs.prompts import Prompt
from tokenscope.inputs.sequences import generated_sequences
from tokenscope.inputs.transforms import splice_insertion
from tokenscope.io import atomic_path
from tokenscope.model.loading import max_positions
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.model.types import CausalLM, Tokenizer
from tokenscope.outcomes.answers import grade_all
from tokenscope.scoring.catalogue import GENERATED_FIELDS
from tokenscope.scoring.formulas import TokenMetrics
from tokenscope.scoring.options import ScoringOptions, scoring_with_deprecated
from tokenscope.scoring.tables import GENERATION_SCHEMA, TOKEN_SCHEMA, GeneratedRows, generation_table, token_table


def generation_requests(
    tokenizer: Tokenizer, prompts: Sequence[Prompt], n_samples: int, seed: int
) -> list[GenerationRequest]:
    requests = []
    for prompt in prompts:
        ids, inserted = splice_insertion(
            tokenizer, prompt.messages, prompt.insertion, generation_prompt_ids(tokenizer, prompt.messages)
        )
        prompt_ids = tuple(ids)  # one tuple for all samples of the prompt
        for sample in range(n_samples):
            requests.append(
                GenerationRequest(prompt.id, sample, sequence_seed(seed, prompt.id, sample), prompt_ids, inserted)
            )
    return requests


def _prepared_requests(
    model: CausalLM, tokenizer: Tokenizer, prompts: Sequence[Prompt], options: GenerationOptions, model_name: str
) -> tuple[list[GenerationRequest], SamplingParams]:
    params = SamplingParams.resolve(getattr(model, "generation_config", None), dict(options.sampling))
    requests = fit_to_context(
        generation_requests(tokenizer, prompts, options.n_samples, options.seed),
        params.max_new_tokens,
        max_positions(model),
        truncate=options.truncate_to_context,
        model_name=model_name,
    )
    return requests, params


def generation_tables(
    generations: Sequence[Generation],
    tokenizer: Tokenizer,
    vocab: VocabularyStrings,
    *,
    model_name: str,
    prompt_set: str,
) -> tuple[pa.Table, pa.Table]:
    """(generations table, per-token table) of `generations`, in their order."""
    texts = tokenizer.batch_decode([g.token_ids.tolist() for g in generations], skip_special_tokens=True)
    rows = GeneratedRows(
        prompt_ids=[g.request.prompt_id for g in generations],
        samples=[g.request.sample for g in generations],
        seeds=[g.request.seed for g in generations],
        prompt_token_ids=[g.request.prompt_ids for g in generations],
        token_ids=[g.token_ids for g in generations],
        texts=texts,
        finish_reasons=[g.finish_reason for g in generations],
        inserted=[g.request.inserted for g in generations],
    )
    # Format facts and extracted answers; the gather grades them against the prompts' answers.
    outcomes = grade_all(texts, [None] * len(texts))
    gen_table = generation_table(rows, model=model_name, prompt_set=prompt_set, outcomes=outcomes)
    sequences = generated_sequences(
        [g.request.prompt_id for g in generations],
        [g.request.sample for g in generations],
        [g.request.prompt_ids for g in generations],
        [g.token_ids for g in generations],
    )
    metrics = TokenMetrics(
        **{
            field.name: torch.from_numpy(np.concatenate([g.metrics[field.name] for g in generations]))
            for field in GENERATED_FIELDS
        }
    )
    return gen_table, token_table(sequences, metrics, vocab, model=model_name, source=model_name, prompt_set=prompt_set)


def _decode_options(options: GenerationOptions, scoring: ScoringOptions, show_progress: bool) -> DecodeOptions:
    """The decode loop's options from the generation and scoring options (its end tokens: the model's)."""
    return DecodeOptions(
        batch_size=options.batch_size, n_alternatives=scoring.n_alternatives, show_progress=show_progress
    )


def run_generation(  # noqa: PLR0913 (the model, its prompts, the tables' two labels, two options objects, progress)
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    *,
    model_name: str,
    prompt_set: str,
    options: GenerationOptions | None = None,
    scoring: ScoringOptions | None = None,
    show_progress: bool = True,
    **deprecated: int,
) -> tuple[pa.Table, pa.Table]:
    """Generate for every prompt and sample; returns (generations table, per-token table), in
    request order (prompt by prompt, samples in order), held in memory (`write_generation`
    streams the same rows to files instead).

    `options`: the generation settings (None: GenerationOptions' defaults); of `scoring`, its
    n_alternatives most probable tokens are recorded per token (`top_k=`: a deprecated name of
    it; the sampling cut-off is `options.sampling["top_k"]`). Prompt + max_new_tokens must fit the
    model's positions (config max_position_embeddings or n_positions), else a ConfigError names
    the prompt; with `options.truncate_to_context` such prompts generate only as many tokens as
    fit (prompts that fit are unaffected).
    """
    options = options if options is not None else GenerationOptions()
    scoring = scoring_with_deprecated(scoring, deprecated, "run_generation")
    requests, params = _prepared_requests(model, tokenizer, prompts, options, model_name)
    generations = generate(model, tokenizer, requests, params, _decode_options(options, scoring, show_progress))
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    return generation_tables(generations, tokenizer, vocab, model_name=model_name, prompt_set=prompt_set)


WRITE_CHUNK_ROWS = 16_384  # token rows buffered on the host before write_generation writes them


def write_generation(  # noqa: PLR0913 (run_generation's, and the two files it writes)
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    *,
    generations_path: str | Path,
    tokens_path: str | Path,
    model_name: str,
    prompt_set: str,
    options: GenerationOptions | None = None,
    scoring: ScoringOptions | None = None,
    show_progress: bool = True,
) -> int:
    """Generate as run_generation does and write its two tables (GENERATION_SCHEMA, TOKEN_SCHEMA)
    to `generations_path` and `tokens_path`; returns the number of generations.

    Rows are written as sequences finish, in chunks of about WRITE_CHUNK_ROWS token rows, so
    neither device nor host memory grows with the number of prompts and samples. Row order: one
    generation per row and each sequence's token rows together in step order, sequences in the
    order they finished (longest prompts are decoded first; the order depends on the prompts and
    the batch size, never on chance), not in request order: the rows are the same as
    run_generation's, ordered differently. Both files appear only when generation has finished
    (written to temporary files beside them, then renamed).
    """
    options = options if options is not None else GenerationOptions()
    scoring = scoring if scoring is not None else ScoringOptions()
    requests, params = _prepared_requests(model, tokenizer, prompts, options, model_name)
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    written = 0
    with (
        atomic_path(generations_path) as generations_tmp,
        atomic_path(tokens_path) as tokens_tmp,
        pq.ParquetWriter(generations_tmp, GENERATION_SCHEMA, compression="zstd") as generations_writer,
        pq.ParquetWriter(tokens_tmp, TOKEN_SCHEMA, compression="zstd") as tokens_writer,
    ):

        def flush(chunk: list[Generation]) -> None:
            gen_table, tok_table = generation_tables(
                chunk, tokenizer, vocab, model_name=model_name, prompt_set=prompt_set
            )
            generations_writer.write_table(gen_table)
            tokens_writer.write_table(tok_table)

        chunk: list[Generation] = []
        rows = 0
        decode_options = _decode_options(options, scoring, show_progress)
        for generation in iter_generations(model, tokenizer, requests, params, decode_options):
            chunk.append(generation)
            rows += len(generation.token_ids)
            written += 1
            if rows >= WRITE_CHUNK_ROWS:
                flush(chunk)
                chunk, rows = [], 0
        if chunk:
            flush(chunk)
    return written
