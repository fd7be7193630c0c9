#!/usr/bin/env python
"""Peak memory of a cross_score job against the number of tokens it scores, on two tiny random
Llama-like models (bench_generation_memory's: hidden 64, 2 layers, vocabulary 2000).

For each size a generations table of synthetic sequences (prompts of ~40 tokens, ~250 generated
tokens, random ids) is written once, then a fresh subprocess per way of scoring it prints one line:

  way, scored tokens, tokens/s, RSS before scoring, peak RSS (MiB), size of the pair table written

  whole   what rule cross_score did before: the generations table read whole, score_pair over every
          sequence, the pair table built in memory and written at the end
  chunks  what it does now: write_pair over sequence_chunks(generation_file_sequences(...),
          PAIR_CHUNK_TOKENS): read a record batch at a time, scored and written a chunk at a time

Both write the same rows in the same order (tests/unit/scoring/test_cross_scoring.py). Peak RSS is
the process's (resource.getrusage), so the model, the tokenizer and torch are in both figures. Each
child first calls tokenscope.workflow.jobs.return_freed_memory, as every rule job does (glibc's
mmap threshold fixed at 4 MiB, so freed chunk buffers go back to the OS). Logits are unembedded
1024 positions at a time (scoring.chunk_rows): 1024 x 2000 fp32 is 8 MB, above that threshold, as
chunk_rows x vocabulary is for every real model (512 x 2000 would fall just under it, and glibc's
heap then fragments with every chunk, which no real vocabulary does).

    python benchmarks/bench_cross_score_memory.py                        # 1e5, 1e6 and 4e6 tokens
    python benchmarks/bench_cross_score_memory.py --sizes 1e5 --threads 2
"""

from __future__ import annotations

import argparse
import json
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


def child(way: str, generations: Path, out: Path, threads: int) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.parquet as pq
    import torch

    from tokenscope.inputs.sequences import (
        SEQUENCE_COLUMNS,
        generation_file_sequences,
        generation_table_sequences,
        sequence_chunks,
    )
    from tokenscope.io import write_parquet
    from tokenscope.scoring.cross_scoring import PAIR_CHUNK_TOKENS, score_pair, write_pair
    from tokenscope.workflow.jobs import return_freed_memory

    return_freed_memory()
    torch.set_num_threads(threads)
    model_a, tokenizer = build(seed=0)
    model_b, _ = build(seed=1)
    names = {"model_a_name": "a", "model_b_name": "b", "source": "a", "prompt_set": "bench"}
    options = {**names, "n_alternatives": 5, "batch_size": 8, "chunk_rows": 1024, "show_progress": False}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if way == "whole":
        sequences = generation_table_sequences(pd.read_parquet(generations, columns=SEQUENCE_COLUMNS))
        write_parquet(score_pair(model_a, tokenizer, model_b, tokenizer, sequences, **options), out)
    else:
        chunks = sequence_chunks(generation_file_sequences(generations), PAIR_CHUNK_TOKENS)
        write_pair(model_a, tokenizer, model_b, tokenizer, chunks, out, **options)
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
    parser.add_argument("--sizes", nargs="+", default=["1e5", "1e6", "4e6"], help="generated tokens per table")
    parser.add_argument("--ways", nargs="+", choices=["whole", "chunks"], default=["whole", "chunks"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        way, generations, out = args.child
        print(json.dumps(child(way, Path(generations), Path(out), args.threads)))
        return
    _, tokenizer = build()
    print(
        f"two tiny random Llamas (hidden 64, 2 layers, vocab {len(tokenizer)}), top-5 alternatives, "
        f"{args.threads} thread(s)"
    )
    print(f"{'way':>6} {'tokens':>10} {'tokens/s':>9} {'RSS before MiB':>14} {'peak RSS MiB':>12} {'table MiB':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            generations = Path(folder) / f"generations-{size}.parquet"
            write_generations(generations, int(float(size)), len(tokenizer))
            for way in args.ways:
                out = Path(folder) / f"pairs-{way}-{size}.parquet"
                command = [
                    sys.executable,
                    __file__,
                    "--threads",
                    str(args.threads),
                    "--child",
                    way,
                    str(generations),
                    str(out),
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{way:>6} {r['tokens']:>10,} {r['tokens'] / r['seconds']:>9,.0f} {r['rss_before_mib']:>14,.0f} "
                    f"{r['peak_rss_mib']:>12,.0f} {r['file_mib']:>9,.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
