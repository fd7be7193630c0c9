#!/usr/bin/env python
"""Peak memory of the scoring jobs (cross_score, teacher_force) against the number of tokens they
score, on tiny random Llama-like models (bench_generation_memory's: hidden 64, 2 layers,
vocabulary 2000).

For each size, synthetic input is written once (cross_score: a generations table, prompts of ~40
tokens and ~250 generated tokens of random ids; teacher_force: a prompt set whose reference answers
are ~250 tokens of random words), then a fresh subprocess per job and way of scoring prints one line:

  job, way, scored tokens, tokens/s, RSS before scoring, peak RSS (MiB), size of the table written

  whole   what the rule did before: every sequence scored into one table in memory (cross_score:
          the generations table read whole, score_pair; teacher_force: run_teacher_forcing),
          written at the end
  chunks  what it does now: sequence_chunks (SCORING_CHUNK_TOKENS token ids per chunk), each
          chunk scored and written as one row group (write_pair over generation_file_sequences,
          which reads a record batch at a time; write_teacher_forcing)

Both ways write the same rows in the same order (tests/unit/scoring/test_cross_scoring.py,
test_teacher_forcing.py). Peak RSS is the process's (resource.getrusage), so the model, the
tokenizer and torch are in every figure. Each child first calls
tokenscope.workflow.jobs.return_freed_memory, as every rule job does (glibc's mmap threshold fixed
at 4 MiB, so freed chunk buffers go back to the OS). Logits are unembedded 1024 positions at a
time (scoring.chunk_rows): 1024 x 2000 fp32 is 8 MB, above that threshold, as chunk_rows x
vocabulary is for every real model (512 x 2000 would fall just under it, and glibc's heap then
fragments with every chunk, which no real vocabulary does).

    python benchmarks/bench_scoring_memory.py                        # both jobs, 1e5, 1e6 and 4e6 tokens
    python benchmarks/bench_scoring_memory.py --jobs teacher_force --sizes 1e5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generation_memory import build  # noqa: E402

PROMPT_TOKENS = 40
GENERATED_TOKENS = 250
JOBS = {"cross_score": "parquet", "teacher_force": "jsonl"}  # a job and its input's suffix


def write_generations(path: Path, tokens: int, vocab: int) -> None:
    """A generations table (GENERATION_SCHEMA's sequence columns) of about `tokens` generated tokens."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = max(1, tokens // GENERATED_TOKENS)
    lengths = rng.integers(GENERATED_TOKENS // 2, GENERATED_TOKENS * 3 // 2, n)
    prompt_lengths = rng.integers(PROMPT_TOKENS // 2, PROMPT_TOKENS * 3 // 2, n)

    def lists(counts: Any) -> pa.ListArray:
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        return pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(rng.integers(3, vocab, int(offsets[-1]), dtype=np.int32))
        )

    table = pa.table(
        {
            "prompt_id": pa.array([f"q{i // 4:07d}" for i in range(n)]),
            "sample": pa.array(np.arange(n) % 4),
            "prompt_token_ids": lists(prompt_lengths),
            "token_ids": lists(lengths),
        }
    )
    pq.write_table(table, path, row_group_size=4096, compression="zstd")


def write_prompt_set(path: Path, tokens: int) -> None:
    """A prompt set whose reference answers hold about `tokens` tokens in all (random words of the
    tokenizer's training alphabet: about 2.5 tokens per word)."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def words(n: int) -> str:
        return " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 7))) for _ in range(n))

    with path.open("w") as out:
        for i in range(max(1, tokens // GENERATED_TOKENS)):
            answer = words(rng.randint(GENERATED_TOKENS // 5, GENERATED_TOKENS * 3 // 5))
            messages = [{"role": "user", "content": words(PROMPT_TOKENS // 3)}]
            prompt = {"id": f"q{i:07d}", "messages": messages, "reference": answer}
            out.write(json.dumps(prompt) + "\n")


def child(job: str, way: str, source: Path, out: Path, threads: int) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.parquet as pq
    import torch

    from tokenscope.inputs.prompts import load_prompt_set
    from tokenscope.inputs.sequences import (
        SEQUENCE_COLUMNS,
        generation_file_sequences,
        generation_table_sequences,
        sequence_chunks,
    )
    from tokenscope.io import write_parquet
    from tokenscope.scoring.cross_scoring import score_pair, write_pair
    from tokenscope.scoring.teacher_forcing import run_teacher_forcing, write_teacher_forcing
    from tokenscope.workflow.jobs import return_freed_memory

    return_freed_memory()
    torch.set_num_threads(threads)
    model_a, tokenizer = build(seed=0)
    model_b, _ = build(seed=1)
    settings = {"n_alternatives": 5, "batch_size": 8, "chunk_rows": 1024}
    try:
        from tokenscope.scoring.options import ScoringOptions
    except ImportError:  # a checkout before the options objects: loose keyword arguments
        scoring: dict = {**settings, "show_progress": False}
    else:
        scoring = {"options": ScoringOptions(**settings), "show_progress": False}
    names = {"model_a_name": "a", "model_b_name": "b", "source": "a", "prompt_set": "bench"}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if job == "teacher_force":
        prompts = load_prompt_set(source)
        if way == "whole":
            write_parquet(
                run_teacher_forcing(model_a, tokenizer, prompts, model_name="a", prompt_set="bench", **scoring), out
            )
        else:
            write_teacher_forcing(model_a, tokenizer, prompts, out, model_name="a", prompt_set="bench", **scoring)
    elif way == "whole":
        sequences = generation_table_sequences(pd.read_parquet(source, columns=SEQUENCE_COLUMNS))
        write_parquet(score_pair(model_a, tokenizer, model_b, tokenizer, sequences, **names, **scoring), out)
    else:
        chunks = sequence_chunks(generation_file_sequences(source))
        write_pair(model_a, tokenizer, model_b, tokenizer, chunks, out, **names, **scoring)
    seconds = time.perf_counter() - start
    return {
        "tokens": pq.ParquetFile(out).metadata.num_rows,
        "seconds": seconds,
        "rss_before_mib": rss_before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "file_mib": out.stat().st_size / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1e5", "1e6", "4e6"], help="scored tokens per job")
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--ways", nargs="+", choices=["whole", "chunks"], default=["whole", "chunks"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job, way, source, out = args.child
        print(json.dumps(child(job, way, Path(source), Path(out), args.threads)))
        return
    _, tokenizer = build()
    print(
        f"tiny random Llamas (hidden 64, 2 layers, vocab {len(tokenizer)}), top-5 alternatives, "
        f"{args.threads} thread(s)"
    )
    print(
        f"{'job':>13} {'way':>6} {'tokens':>10} {'tokens/s':>9} {'RSS before MiB':>14} {'peak RSS MiB':>12} "
        f"{'table MiB':>9}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            for job in args.jobs:
                source = Path(folder) / f"{job}-{size}.{JOBS[job]}"
                if job == "teacher_force":
                    write_prompt_set(source, int(float(size)))
                else:
                    write_generations(source, int(float(size)), len(tokenizer))
                for way in args.ways:
                    out = Path(folder) / f"{job}-{way}-{size}.parquet"
                    command = [sys.executable, __file__, "--threads", str(args.threads), "--child"]
                    done = subprocess.run(
                        [*command, job, way, str(source), str(out)], capture_output=True, text=True, check=True
                    )
                    r = json.loads(done.stdout.strip().splitlines()[-1])
                    print(
                        f"{job:>13} {way:>6} {r['tokens']:>10,} {r['tokens'] / r['seconds']:>9,.0f} "
                        f"{r['rss_before_mib']:>14,.0f} {r['peak_rss_mib']:>12,.0f} {r['file_mib']:>9,.1f}",
                        flush=True,
                    )
                    out.unlink()


if __name__ == "__main__":
    main()
