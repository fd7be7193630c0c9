#!/usr/bin/env python
"""Peak memory of a generate job against its number of requests, on a tiny random Llama-like model.

For each N (requests = prompts x samples) a fresh subprocess builds the model (hidden 64, 2
layers, vocabulary 2000, random weights), generates with write_generation into a temporary
folder and prints one line:

  requests, generated tokens, tokens/s, RSS before generating, peak RSS (MiB), KV cache per row

Peak RSS is the process's (resource.getrusage); the KV cache per row is computed from the model
config, 2 x layers x kv_heads x head_dim x columns x dtype bytes, with the columns the decode loop
allocates for the widest prompt (width + steps - 1 + margin; before that change width + 2 x
steps). A checkout without write_generation (before streaming) runs run_generation and writes its
tables with pyarrow.parquet.write_table instead. Some end tokens are made frequent (one id in
`--end-every` ends a sequence) so rows finish at different steps and queued prompts take over
their slots. The KV buffer is allocated once per wave: a joining prompt is prefilled on its own and
written into its row of the same buffer, before the current column (room is made by dropping
leading columns no row uses, in place), so joins never grow or double it; the copies are transient
(the joining rows' own prefill, and the kept rows when rows leave a wave with no prompt queued).

    python benchmarks/bench_generation_memory.py                   # N = 64, 256, 1024, 4096
    python benchmarks/bench_generation_memory.py --sizes 64 256     # quicker
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
sys.path.insert(0, str(REPO / "src"))  # runs from a checkout without an installed package too

VOCAB = 2000
SAMPLES = 4


def build(seed: int = 0) -> tuple[Any, Any]:
    """A byte-level BPE tokenizer of VOCAB ids trained on random words, and a random Llama."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    corpus = [
        " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 7))) for _ in range(30)) for _ in range(3000)
    ]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=VOCAB, min_frequency=1, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval(), tokenizer


def prompts(n_prompts: int, seed: int = 0) -> list[Any]:
    from tokenscope.inputs.prompts import Prompt

    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    return [
        Prompt(id=f"p{i}", messages=({"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(3, 40)))},))
        for i in range(n_prompts)
    ]


def kv_bytes_per_row(model: Any, width: int, steps: int) -> tuple[int, int]:
    """(columns, bytes) of one row of the KV cache the decode loop allocates for prompts of `width`."""
    from tokenscope.generation import decode

    if hasattr(decode, "cache_margin"):
        columns = width + steps - 1 + decode.cache_margin(width, steps)
    else:
        columns = width + 2 * steps
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    dtype_bytes = next(model.parameters()).element_size()
    return columns, 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * columns * dtype_bytes


def child(n_requests: int, max_new_tokens: int, batch_size: int, end_every: int) -> dict[str, Any]:
    import torch

    from tokenscope.generation import run
    from tokenscope.generation.run import generation_requests

    torch.set_num_threads(1)
    model, tokenizer = build()
    if end_every:
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, *range(3, len(tokenizer), end_every)]
    chosen = prompts(n_requests // SAMPLES)
    settings = dict(
        n_samples=SAMPLES,
        seed=0,
        sampling={"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": max_new_tokens},
        batch_size=batch_size,
    )
    try:
        from tokenscope.generation.options import GenerationOptions
    except ImportError:  # a checkout before the options objects: loose keyword arguments
        generation: dict = settings
    else:
        generation = {"options": GenerationOptions(**settings)}
    options = dict(model_name="tiny", prompt_set="bench", show_progress=False, **generation)
    width = max(len(r.prompt_ids) for r in generation_requests(tokenizer, chosen, 1, 0))
    columns, kv_row = kv_bytes_per_row(model, width, max_new_tokens)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as folder:
        generations_path, tokens_path = Path(folder) / "generations.parquet", Path(folder) / "tokens.parquet"
        start = time.perf_counter()
        if hasattr(run, "write_generation"):
            run.write_generation(
                model, tokenizer, chosen, generations_path=generations_path, tokens_path=tokens_path, **options
            )
            how = "write_generation"
        else:  # a checkout before streaming
            import pyarrow.parquet as pq

            generations, tokens = run.run_generation(model, tokenizer, chosen, **options)
            pq.write_table(generations, generations_path, compression="zstd")
            pq.write_table(tokens, tokens_path, compression="zstd")
            del generations, tokens
            how = "run_generation + write_table"
        seconds = time.perf_counter() - start
        import pyarrow.parquet as pq

        n_tokens = pq.ParquetFile(tokens_path).metadata.num_rows
    return {
        "requests": n_requests,
        "tokens": n_tokens,
        "seconds": seconds,
        "rss_before_mib": rss_before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "kv_columns": columns,
        "kv_bytes_per_row": kv_row,
        "how": how,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--end-every", type=int, default=100, help="every n-th token id also ends a sequence (0: none)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.max_new_tokens, args.batch_size, args.end_every)))
        return
    print(
        f"tiny Llama (hidden 64, 2 layers, vocab {VOCAB}), {SAMPLES} samples per prompt, "
        f"max_new_tokens {args.max_new_tokens}, batch {args.batch_size}, checkout {REPO}"
    )
    print(
        f"{'requests':>8} {'tokens':>8} {'tokens/s':>9} {'RSS before MiB':>14} {'peak RSS MiB':>12} "
        f"{'KV cols':>7} {'KV bytes/row':>12}  written by"
    )
    for n in args.sizes:
        command = [sys.executable, __file__, "--child", str(n), "--max-new-tokens", str(args.max_new_tokens),
                   "--batch-size", str(args.batch_size), "--end-every", str(args.end_every)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{r['requests']:>8} {r['tokens']:>8} {r['tokens'] / r['seconds']:>9.0f} {r['rss_before_mib']:>14.0f} "
            f"{r['peak_rss_mib']:>12.0f} {r['kv_columns']:>7} {r['kv_bytes_per_row']:>12}  {r['how']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
