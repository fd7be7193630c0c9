#!/usr/bin/env python
"""Cost of the `finetune` step on the embedded model, and the behaviour change it causes on math24.

Prints, one labelled figure per line:

  [1] the finetune with the default FinetuneConfig (or --set overrides): wall time, CPU time
      (user+sys of this process, all threads), peak RSS, trained parameters, the loss curve
  [2] per model (the base model, then each checkpoint-k-of-K), generating on math24 with the
      workflow's default sampling (temperature 0.7, top-p 0.9, top-k 50, 256 new tokens, seed 0):
      the share of generations that open with <think>, contain </think>, contain \\boxed{, stop
      at eos, and their mean length in tokens

    python benchmarks/bench_finetune.py                      # ~2 min finetune + ~1-2 min per model, idle 2 cores
    python benchmarks/bench_finetune.py --models base,4      # the base model and the last checkpoint only
    python benchmarks/bench_finetune.py --set steps=48 --set learning_rate=2e-4

The embedded SmolLM2-135M-Instruct is prepared once into `~/.cache/tokenscope/benchmarks/`;
checkpoints go to --output-dir (default: a temporary folder). Figures on a shared machine are
noisy: compare CPU times, or run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import resource
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # runs from a checkout without an installed package too

DEFAULT_PROMPTS = REPO / "config" / "prompts" / "math24.jsonl"
EMBEDDED = "SmolLM2-135M-Instruct"
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50}  # config/config.yaml


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def prepared_embedded() -> Path:
    from tokenscope.model.sources import MANIFEST, ModelSpec, default_cache_dir, prepare_model

    out_dir = default_cache_dir() / "benchmarks" / EMBEDDED
    if not (out_dir / MANIFEST).exists():
        prepare_model(ModelSpec(name="smollm2", kind="embedded", location=EMBEDDED), out_dir)
    return out_dir


def format_shares(texts: list[str], n_tokens: list[int], finish: list[str]) -> dict[str, float]:
    """Shares of the reasoning format's markers among generations, and their mean length."""
    n = max(len(texts), 1)
    return {
        "opens_think": sum(t.lstrip().startswith("<think>") for t in texts) / n,
        "closes_think": sum("</think>" in t for t in texts) / n,
        "boxed": sum("\\boxed{" in t for t in texts) / n,
        "boxed_after_think": sum("</think>" in t and "\\boxed{" in t.split("</think>", 1)[1] for t in texts) / n,
        "eos": sum(f == "eos" for f in finish) / n,
        "mean_tokens": sum(n_tokens) / n,
    }


def measure_model(name: str, prepared_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tokenscope.generation.options import GenerationOptions
    from tokenscope.generation.run import run_generation
    from tokenscope.inputs.prompts import load_prompt_set
    from tokenscope.model.loading import LoadOptions, load_model

    model, tokenizer = load_model(prepared_dir, LoadOptions(device="cpu", dtype="float32"))
    started, cpu = time.perf_counter(), cpu_seconds()
    generations, _ = run_generation(
        model,
        tokenizer,
        load_prompt_set(args.prompts),
        model_name=name,
        prompt_set="math24",
        options=GenerationOptions(
            n_samples=args.n_samples,
            seed=0,
            sampling={**SAMPLING, "max_new_tokens": args.max_new_tokens},
            batch_size=args.batch_size,
        ),
        show_progress=False,
    )
    columns = generations.to_pydict()
    shares = format_shares(columns["text"], columns["n_tokens"], columns["finish_reason"])
    shares.update(generations=len(columns["text"]), wall_s=time.perf_counter() - started, cpu_s=cpu_seconds() - cpu)
    if args.show_text:
        for prompt_id, text in list(zip(columns["prompt_id"], columns["text"], strict=True))[: args.show_text]:
            print(f"    --- {name} {prompt_id}: {text[:400]!r}")
    return shares


def parse_overrides(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a FinetuneConfig field (repeatable), e.g. --set steps=48",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for finetune and generation")
    parser.add_argument("--output-dir", help="checkpoint folder (default: temporary, deleted at the end)")
    parser.add_argument("--reuse", action="store_true", help="skip the finetune if --output-dir holds a finished run")
    parser.add_argument("--models", default="all", help="comma list of base and checkpoint numbers k, or all / none")
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS))
    parser.add_argument("--n-samples", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--show-text", type=int, default=0, help="print the start of this many generations per model")
    parser.add_argument("--json", help="also write all figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    import torch

    from tokenscope.finetune.training import FinetuneConfig, checkpoint_name, finetune, read_training_log
    from tokenscope.model.sources import ModelSpec, prepare_model

    torch.set_num_threads(args.threads)
    config = replace(FinetuneConfig(), threads=args.threads, **parse_overrides(args.set))
    base_dir = prepared_embedded()
    scratch = tempfile.TemporaryDirectory(prefix="bench-finetune-")
    output_dir = Path(args.output_dir) if args.output_dir else Path(scratch.name) / "finetune"
    report: dict[str, Any] = {"config": asdict(config), "threads": args.threads}

    print(f"[1] finetune of {EMBEDDED}: {config}")
    if args.reuse and (output_dir / "training_log.json").exists():
        print("    reusing the finished run in", output_dir)
    else:
        rss_before, started, cpu = peak_rss_mib(), time.perf_counter(), cpu_seconds()
        finetune(base_dir, output_dir, config, progress=False)
        wall, cpu_used = time.perf_counter() - started, cpu_seconds() - cpu
        report["finetune"] = {
            "wall_s": wall,
            "cpu_s": cpu_used,
            "peak_rss_mib": peak_rss_mib(),
            "peak_rss_before_mib": rss_before,
        }
        print(f"    wall {wall:.1f} s, CPU (user+sys) {cpu_used:.1f} s, peak RSS {peak_rss_mib():.0f} MiB")
    run_log = read_training_log(output_dir)
    losses = [round(step["loss"], 3) for step in run_log["steps"]]
    report["training_log"] = run_log
    print(
        f"    trained {run_log['trainable_parameters'] / 1e6:.1f}M of {run_log['total_parameters'] / 1e6:.1f}M "
        f"parameters; training loop {run_log['train_seconds']:.1f} s; {run_log['examples_kept']} chats"
    )
    print(f"    loss curve: {losses}")

    wanted = (
        ["base", *map(str, range(1, config.n_checkpoints + 1))]
        if args.models == "all"
        else ([] if args.models == "none" else args.models.split(","))
    )
    results: dict[str, Any] = {}
    print(f"[2] math24 x {args.n_samples} samples, {args.max_new_tokens} new tokens, batch {args.batch_size}")
    print(
        f"    {'model':<22} {'<think>':>8} {'</think>':>9} {'boxed':>7} {'boxed after':>12} {'eos':>6} "
        f"{'mean tok':>9} {'wall s':>7} {'cpu s':>7}"
    )
    for item in wanted:
        if item == "base":
            name, prepared = "base", base_dir
        else:
            name = checkpoint_name(int(item), config.n_checkpoints)
            prepared = Path(scratch.name) / "prepared" / name
            prepare_model(ModelSpec(name=name, kind="path", location=str(output_dir / name)), prepared)
        shares = results[name] = measure_model(name, prepared, args)
        print(
            f"    {name:<22} {shares['opens_think']:>8.2f} {shares['closes_think']:>9.2f} {shares['boxed']:>7.2f} "
            f"{shares['boxed_after_think']:>12.2f} {shares['eos']:>6.2f} {shares['mean_tokens']:>9.1f} "
            f"{shares['wall_s']:>7.1f} {shares['cpu_s']:>7.1f}",
            flush=True,
        )
    report["behaviour"] = results
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    scratch.cleanup()


if __name__ == "__main__":
    main()
