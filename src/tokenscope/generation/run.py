"""Generation over a prompt set: requests per prompt and sample, the decode loop, and its tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from tokenscope.generation.decode import GenerationRequest, fit_to_context, generate
from tokenscope.generation.sampling import SamplingParams, sequence_seed
from tokenscope.inputs.chat import generation_prompt_ids
from tokenscope.inputs.prompts import Prompt
from tokenscope.inputs.sequences import generated_sequences
from tokenscope.inputs.transforms import splice_insertion
from tokenscope.model.loading import max_positions
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.model.types import CausalLM, Tokenizer
from tokenscope.scoring.formulas import TokenMetrics
from tokenscope.scoring.options import renamed_top_k
from tokenscope.scoring.tables import generation_table, token_table


def generation_requests(
    tokenizer: Tokenizer, prompts: Sequence[Prompt], n_samples: int, seed: int
) -> list[GenerationRequest]:
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
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    *,
    model_name: str,
    prompt_set: str,
    n_samples: int = 1,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    batch_size: int = 16,
    n_alternatives: int | None = None,
    show_progress: bool = True,
    truncate_to_context: bool = False,
    top_k: int | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Generate for every prompt and sample; returns (generations table, per-token table).

    `n_alternatives` (default 5) most probable tokens are recorded per token (`top_k`: its
    deprecated name; the sampling cut-off is `sampling["top_k"]`). Prompt + max_new_tokens must
    fit the model's positions (config max_position_embeddings or n_positions), else a ConfigError
    names the prompt; with `truncate_to_context` such prompts generate only as many tokens as fit
    (prompts that fit are unaffected).
    """
    n_alternatives = renamed_top_k(n_alternatives, top_k, "run_generation")
    params = SamplingParams.resolve(getattr(model, "generation_config", None), sampling or {})
    requests = fit_to_context(
        generation_requests(tokenizer, prompts, n_samples, seed),
        params.max_new_tokens,
        max_positions(model),
        truncate=truncate_to_context,
        model_name=model_name,
    )
    generations = generate(model, tokenizer, requests, params, batch_size, n_alternatives, show_progress)
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
    sequences = generated_sequences(
        [g.request.prompt_id for g in generations],
        [g.request.sample for g in generations],
        [g.request.prompt_ids for g in generations],
        [g.token_ids for g in generations],
    )
    metrics = TokenMetrics(
        *(
            torch.from_numpy(np.concatenate([getattr(g, field) for g in generations]))
            for field in ("entropy", "logprob", "rank", "topk_ids", "topk_logprobs")
        )
    )
    vocab = VocabularyStrings.from_tokenizer(tokenizer)
    return gen_table, token_table(sequences, metrics, vocab, model=model_name, source=model_name, prompt_set=prompt_set)
