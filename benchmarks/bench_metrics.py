#!/usr/bin/env python
"""Per-step metric time of the decode loop: sampling + per-token metrics on one [batch, vocab] fp32
logits tensor, this checkout against an earlier revision, in one run (so the ratio is measured on
the same machine load).

Default: the embedded model's vocabulary (49,152) at batch 64, the default config's sampling
(temperature 0.7, top-k 50, top-p 0.9), top-p alone, and greedy decoding, 5 alternatives. The
earlier revision's scoring/formulas.py and generation/sampling.py are read with `git show`
(default HEAD: the committed code, before uncommitted changes; --baseline takes any commit). Old
and new are called alternately, so both see the same load, and the fastest of --repeats calls is
kept (the one least disturbed by other processes). Prints one line per setting: milliseconds per
step of sampling, of metrics and of both, old and new, and new/old. Printed, never asserted.

    python benchmarks/bench_metrics.py
    python benchmarks/bench_metrics.py --batch 64 --vocab 49152 --repeats 30 --baseline HEAD~3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # runs from a checkout without an installed package too

from tokenscope.generation import sampling as new_sampling  # noqa: E402
from tokenscope.scoring import formulas as new_formulas  # noqa: E402


def load_revision(revision: str, path: str, name: str) -> types.ModuleType:
    """The module at `path` as committed in `revision`, imported under `name`."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{revision}:{path}"], capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType(name)
    module.__file__ = f"{revision}:{path}"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def paired_ms(old: Callable[[], Any], new: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Fastest milliseconds of `old` and `new` (the least disturbed by other load), called alternately."""
    old(), new()  # warm up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, spent in ((old, times[0]), (new, times[1])):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return 1000 * min(times[0]), 1000 * min(times[1])


def logits_like_a_model(batch: int, vocab: int) -> torch.Tensor:
    """Rows with a heavy head and a long tail, at logit scales of real models (peaks around 20-40)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, vocab, generator=generator) * 2.5
    peaks = torch.randint(0, vocab, (batch, 8), generator=generator)
    logits.scatter_add_(1, peaks, torch.rand(batch, 8, generator=generator) * 12)
    return logits + 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--alternatives", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--baseline", default="HEAD", help="git revision of the code compared against")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    old_formulas = load_revision(args.baseline, "src/tokenscope/scoring/formulas.py", "_old_formulas")
    old_sampling = load_revision(args.baseline, "src/tokenscope/generation/sampling.py", "_old_sampling")
    logits = logits_like_a_model(args.batch, args.vocab)
    seeds = torch.arange(args.batch) * 7919 + 1
    k = args.alternatives
    print(
        f"batch {args.batch}, vocabulary {args.vocab}, {k} alternatives, {torch.get_num_threads()} threads, "
        f"baseline {args.baseline}; fastest ms per step of {args.repeats} repeats"
    )
    settings = {
        "T0.7/top-k 50/top-p 0.9": dict(do_sample=True, temperature=0.7, top_k=50, top_p=0.9),
        "T0.7/top-p 0.9": dict(do_sample=True, temperature=0.7, top_k=0, top_p=0.9),
        "greedy": dict(do_sample=False),
    }
    print("setting | sample old | sample new | metrics old | metrics new | step old | step new | step new/old")
    for label, values in settings.items():
        old_params = old_sampling.SamplingParams(**values)
        new_params = new_sampling.SamplingParams(**values)

        def old_sample(p: Any = old_params) -> torch.Tensor:
            return old_sampling.sample_tokens(logits, p, seeds, 3)

        def new_sample(p: Any = new_params) -> tuple[torch.Tensor, torch.Tensor]:
            return new_sampling.sample_with_entropy(logits, p, seeds, 3)

        chosen = old_sample()
        assert torch.equal(chosen, new_sample()[0]), "the new sampler draws other tokens"

        def old_step() -> Any:
            return old_formulas.metrics_from_logits(logits, old_sample(), k)

        def new_step() -> Any:
            tokens, _ = new_sample()
            return new_formulas.metrics_from_logits(logits, tokens, k)

        row = [
            *paired_ms(old_sample, new_sample, args.repeats),
            *paired_ms(
                lambda c=chosen: old_formulas.metrics_from_logits(logits, c, k),
                lambda c=chosen: new_formulas.metrics_from_logits(logits, c, k),
                args.repeats,
            ),
        ]
        step_old, step_new = paired_ms(old_step, new_step, args.repeats)
        cells = " | ".join(f"{v:.2f}" for v in [*row, step_old, step_new])
        print(f"{label} | {cells} | {step_new / step_old:.2f}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
