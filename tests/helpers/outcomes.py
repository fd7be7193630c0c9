"""Synthetic per-token and generations tables (with `correct`) for the outcome statistics' tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_run(tmp_path, models=("base", "ckpt"), prompts=6, samples=3, seed=0, with_answers=True):
    """Per-token and generations tables of each model: `prompts` x `samples` generations; correct
    generations get lower entropy on average; prompt p5 has no answer (correct null)."""
    rng = np.random.default_rng(seed)
    tokens, generations = {}, {}
    for m, model in enumerate(models):
        token_rows, gen_rows = [], []
        for p in range(prompts):
            for s in range(samples):
                correct = bool(rng.random() < 0.3 + 0.1 * p + 0.1 * m)
                length = int(rng.integers(1, 9))
                entropy = rng.gamma(2.0, 0.5 if correct else 0.8, size=length).astype(np.float32)
                if p == 1 and s == 0:
                    entropy[0] = np.nan  # left out of every statistic
                logprob = -rng.gamma(1.5, 1.0, size=length).astype(np.float32)
                for step in range(length):
                    token_rows.append((model, f"p{p}", s, step, entropy[step], logprob[step]))
                answer = None if (p == 5 or not with_answers) else correct
                gen_rows.append((model, f"p{p}", s, length, answer))
        frame = pd.DataFrame(token_rows, columns=["model", "prompt_id", "sample", "step", "entropy", "logprob"])
        frame["sample"] = frame["sample"].astype(np.int32)
        gens = pd.DataFrame(gen_rows, columns=["model", "prompt_id", "sample", "n_tokens", "correct"])
        gens["correct"] = gens["correct"].astype("boolean")
        gens = gens.sample(frac=1.0, random_state=seed)  # row order must not matter
        tokens[model] = tmp_path / f"{model}_tokens.parquet"
        generations[model] = tmp_path / f"{model}_generations.parquet"
        frame.to_parquet(tokens[model])
        gens.to_parquet(generations[model])
    return tokens, generations
