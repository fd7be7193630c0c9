#!/usr/bin/env python
"""Time and peak memory of the analysis, statistics, figure, token-view and outcome steps at research scale,
and the planning time (`snakemake -n`) of configs with 10 to 50 models.

For each size (token rows per model) the script writes synthetic per-token tables with the
project's own Arrow schemas (tokenscope.scoring.tables) for a group of models, a base and its
checkpoints, into a scratch results tree, then runs the workflow's own rules on them with the
real Snakefile, one step (rule) at a time with `--cores 1`, and measures each job's process:
wall time, CPU time and peak RSS. Last it times `snakemake -n` for configs of 10, 20 and 50 models
x 5 prompt sets with `comparison.pairs` base and all.

    python benchmarks/bench_scale.py --rows 1e5 --skip-planning    # one size, about 10 minutes on 2 quiet cores
    python benchmarks/bench_scale.py                               # 1e5, 1e6, 1e7 and planning (`make bench-scale`)
    python benchmarks/bench_scale.py --rows 1e6 --steps analyze_tokens compare_group --skip-planning
    python benchmarks/bench_scale.py --skip-steps --planning-models 10 20

Synthetic data: prompts x 4 samples x ~250 generated tokens per model (rows / 1000 prompts),
token ids drawn from a Zipf law over a 49,152-entry byte-level vocabulary of word-like pieces
(a real tokenizer built in memory: the token view decodes with it), entropies from a gamma
distribution, top-5 lists, and pair tables (base, checkpoint) that score the base's own
generations with the base's keys and values; every prompt has an `answer` and each generation is
graded correct with a probability that rises with the checkpoint (0.4 for the base, +0.05 per
step: what the outcome rules read). Tables are written in record batches, so writing 10^7 rows per
model holds about one batch (2^19 rows) in memory.

How the workflow is made to take the synthetic files as given: a dry run of the default target
lists every job with its rule, inputs, outputs and wildcards. Jobs that need a model are not run
(MODEL_RULES, any rule that writes only under DATA_PREFIXES, and any job whose outputs only such
jobs read, e.g. generation shards before their gather); every other planned rule except
RECORD_RULES is a step, and the files the steps read that a job not run would write are what the
script writes. Each step then runs as `snakemake --cores 1 OUTPUTS... --allowed-rules STEP`: with
--allowed-rules, Snakemake builds the DAG from the allowed rules only, so an input that another
rule would write is a plain source file when it exists (a missing one is a MissingInputException)
and no generation, scoring or model preparation is ever scheduled; the synthetic files carry no
Snakemake metadata, so no rerun trigger (params, code, mtime of upstream jobs) reaches them.
(Targets go before --allowed-rules, which takes every name after it.) Rule names change as the
workflow does: the steps are read from the dry run at run time; STEP_ORDER only orders the table.
Last, `snakemake --report` of all the steps' outputs, with its size.

Measurement: Snakemake's own `benchmark:` files sample the job's processes every 30 s
(BENCHMARK_INTERVAL), so a job of a few seconds gets a sample or two; they are printed where a
rule has them, but the table's figures come from polling /proc every 50 ms for the job processes
Snakemake starts (`python .snakemake/scripts/tmp*.py`, and their children) among this script's
own descendants: CPU = utime + stime (+ reaped children), peak RSS = the largest VmHWM (kernel
high-water mark) or summed VmRSS of the job's process tree, wall = job start to exit. Snakemake's
own parsing and scheduling are not counted; the report row is Snakemake's own process (wait4).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tokenscope.scoring.tables import GENERATION_SCHEMA, PAIR_SCHEMA, TOKEN_SCHEMA  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# The workflow measured: this clone's, unless --snakefile names another copy (e.g. a `git archive` of a commit).
SNAKEFILE = REPO / "Snakefile"
DEFAULT_ROWS = ("1e5", "1e6", "1e7")
# Rules that need a model: never run here; their outputs are the synthetic tables and manifests.
MODEL_RULES = {
    "prepare_model",
    "generate",
    "teacher_force",
    "cross_score",
    "finetune",
    "marker_attention",
    "attention_positions",
    "depth",
}
# A rule whose outputs all lie under these folders writes model outputs (whatever its name).
DATA_PREFIXES = ("results/tokens/", "results/generations/", "results/pairs/", "results/models/")
# Rules that record or copy the run: neither run nor measured.
RECORD_RULES = {"all", "run_record", "gallery"}
# Preferred order of the steps in the table (others follow in the order the dry run plans them).
STEP_ORDER = (
    "check_tokenizers",
    "analyze_tokens",
    "summarize_group",
    "plot_entropy_hist",
    "plot_prompt_figures",
    "compare_group",
    "plot_trends",
    "token_view",
    "outcome_stats",
    "plot_outcomes",
)
SAMPLES = 4  # samples per prompt
TOKENS_PER_SEQUENCE = 250  # mean generated tokens per sample
PROMPT_TOKENS = 40  # mean prompt length in tokens
TOP_K = 5
VOCAB_SIZE = 49_152
BATCH_ROWS = 1 << 19  # rows per record batch written (and per row group)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PLANNING_SETS = 5
POLL_S = 0.05


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Vocabulary and tokenizer


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in of each byte 0..255 (byte-level BPE's base alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    stand_in = {byte: byte for byte in printable}
    for byte in range(256):
        if byte not in stand_in:
            stand_in[byte] = 256 + len(stand_in) - len(printable)
    return [chr(stand_in[byte]) for byte in range(256)]


def synthetic_vocabulary(size: int, seed: int = 0) -> list[str]:
    """Byte-level pieces: specials, the 256 bytes, then word-like pieces ('Ġ' marks a leading space)."""
    rng = np.random.default_rng(seed)
    onsets = "b c d f g h j k l m n p r s t v w st th ch sh tr pr gr br cl fl sp qu".split()
    vowels = "a e i o u ea ou ai io ee oo y".split()
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "st", "ck", "rt", "nt", "ed", "ing", "er", "ion"]
    pieces = SPECIAL_TOKENS + _byte_alphabet()
    seen = set(pieces)
    extras = [str(n) for n in range(1000)] + [
        "Ġ=",
        "Ġ+",
        "Ġ\\",
        "Ġ{",
        "Ġ}",
        "ĠÃ©",
        "Ã¨s",
        "âĢĶ",
        "ĊĊ",
        "Ġ(",
        ").",
        ",Ġ",
    ]
    for piece in extras:
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
    while len(pieces) < size:
        syllables = int(rng.integers(1, 4))
        word = "".join(
            rng.choice(onsets) + rng.choice(vowels) + (rng.choice(codas) if k == syllables - 1 else "")
            for k in range(syllables)
        )
        roll = rng.random()
        if roll < 0.15:
            word = word.capitalize()
        if roll > 0.4:
            word = "Ġ" + word
        if word not in seen:
            seen.add(word)
            pieces.append(word)
    return pieces[:size]


def save_tokenizer(folder: Path, size: int = VOCAB_SIZE) -> tuple[list[str], list[str], str]:
    """A byte-level BPE tokenizer with `size` entries saved in `folder`; (pieces, readable, fingerprint)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tokenscope.model.tokenizers import tokenizer_fingerprint

    pieces = synthetic_vocabulary(size)
    backend = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    decode = {c: b for b, c in enumerate(_byte_alphabet())}
    readable = [
        p if p in SPECIAL_TOKENS else bytes(decode[c] for c in p).decode("utf-8", errors="replace") for p in pieces
    ]
    return pieces, readable, tokenizer_fingerprint(tokenizer)


# Synthetic tables


@dataclass
class Vocabulary:
    pieces: pa.StringArray
    readable: pa.StringArray
    zipf_cdf: np.ndarray
    zipf_ids: np.ndarray

    @classmethod
    def of(cls, pieces: list[str], readable: list[str], seed: int = 0) -> Vocabulary:
        rng = np.random.default_rng(seed)
        ids = rng.permutation(np.arange(len(SPECIAL_TOKENS), len(pieces)))
        weights = 1.0 / (np.arange(ids.size) + 2.7) ** 1.1
        return cls(
            pa.array(pieces, pa.string()), pa.array(readable, pa.string()), np.cumsum(weights / weights.sum()), ids
        )

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        index = np.minimum(np.searchsorted(self.zipf_cdf, rng.random(n)), self.zipf_ids.size - 1)
        return self.zipf_ids[index].astype(np.int32)


@dataclass(frozen=True)
class Layout:
    """The sequences of one model's table: prompts x SAMPLES sequences of ~TOKENS_PER_SEQUENCE tokens."""

    prompt_ids: list[str]
    n_prompts: int
    prompt_lengths: np.ndarray  # per prompt
    lengths: np.ndarray  # per sequence (prompt-major, then sample)

    @classmethod
    def of(cls, rows: int, prompt_ids: list[str], prompt_lengths: np.ndarray, seed: int) -> Layout:
        n_seq = len(prompt_ids) * SAMPLES
        rng = np.random.default_rng(seed)
        raw = rng.gamma(4.0, TOKENS_PER_SEQUENCE / 4.0, n_seq) + 1
        lengths = np.maximum(np.floor(raw * rows / raw.sum()), 1).astype(np.int64)
        lengths[np.argsort(-lengths)[: rows - int(lengths.sum())]] += 1  # exactly `rows`
        while lengths.sum() > rows:  # only when rows < sequences' minimum of one token each
            lengths[np.argmax(lengths)] -= 1
        return cls(prompt_ids, len(prompt_ids), prompt_lengths, lengths)


def sequence_batches(lengths: np.ndarray) -> Iterator[np.ndarray]:
    """Sequence indices per batch of about BATCH_ROWS rows (fixed by the layout alone)."""
    ends = np.cumsum(lengths)
    start = 0
    while start < lengths.size:
        before = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, before + BATCH_ROWS, side="right")), start + 1)
        yield np.arange(start, stop)
        start = stop


def token_columns(layout: Layout, vocab: Vocabulary, seqs: np.ndarray, seed: Sequence[int]) -> dict[str, Any]:
    """Keys and metrics of the generated tokens of sequences `seqs` of one model."""
    rng = np.random.default_rng(list(seed))
    counts = layout.lengths[seqs]
    n = int(counts.sum())
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    step = (np.arange(n) - np.repeat(first, counts)).astype(np.int32)
    prompt_index = seqs // SAMPLES
    position = step + np.repeat(layout.prompt_lengths[prompt_index], counts).astype(np.int32)
    token_id = vocab.draw(rng, n)
    last_prompt_token = vocab.draw(rng, seqs.size)
    context = np.empty(n, np.int32)
    context[1:] = token_id[:-1]
    context[first] = last_prompt_token
    entropy = np.minimum(rng.gamma(0.7, 1.4, n), np.log(VOCAB_SIZE)).astype(np.float32)
    rank = np.where(rng.random(n) < 0.62, 0, rng.geometric(0.35, n)).astype(np.int32)
    logprob = -(rng.gamma(0.9, 0.25, n) * (0.2 + entropy) + 0.8 * rank * rng.random(n)).astype(np.float32)
    top = np.sort(rng.dirichlet(np.full(TOP_K + 1, 0.6), n)[:, :TOP_K], axis=1)[:, ::-1].astype(np.float32)
    topk_ids = vocab.draw(rng, n * TOP_K).reshape(n, TOP_K)
    in_top = rank < TOP_K
    topk_ids[in_top, rank[in_top]] = token_id[in_top]
    return {
        "counts": counts,
        "prompt_index": prompt_index,
        "sample": (seqs % SAMPLES).astype(np.int32),
        "step": step,
        "position": position,
        "token_id": token_id,
        "context_token_id": context,
        "entropy": entropy,
        "logprob": logprob,
        "rank": rank,
        "topk_ids": topk_ids,
        "topk_probs": top,
    }


def _repeat_string(value: str, n: int) -> pa.Array:
    return pc.take(pa.array([value], pa.string()), pa.array(np.zeros(n, np.int32)))


def _lists(flat: pa.Array | np.ndarray, width: int, n: int, value_type: pa.DataType) -> pa.ListArray:
    values = flat if isinstance(flat, pa.Array) else pa.array(flat.reshape(-1), value_type)
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * width), values)


def _keys(layout: Layout, cols: dict[str, Any], source: str, prompt_set: str) -> dict[str, pa.Array]:
    n = cols["token_id"].size
    per_token_prompt = np.repeat(cols["prompt_index"], cols["counts"])
    return {
        "source": _repeat_string(source, n),
        "prompt_set": _repeat_string(prompt_set, n),
        "prompt_id": pc.take(pa.array(layout.prompt_ids, pa.string()), pa.array(per_token_prompt)),
        "sample": pa.array(np.repeat(cols["sample"], cols["counts"])),
        "step": pa.array(cols["step"]),
        "position": pa.array(cols["position"]),
        "segment": _repeat_string("completion", n),
        "context_token_id": pa.array(cols["context_token_id"]),
    }


def token_batch(layout: Layout, vocab: Vocabulary, cols: dict[str, Any], model: str, prompt_set: str) -> pa.Table:
    n = cols["token_id"].size
    topk = cols["topk_ids"]
    return pa.table(
        {
            "model": _repeat_string(model, n),
            **_keys(layout, cols, model, prompt_set),
            "context_token": pc.take(vocab.readable, pa.array(cols["context_token_id"])),
            "context_piece": pc.take(vocab.pieces, pa.array(cols["context_token_id"])),
            "token_id": pa.array(cols["token_id"]),
            "token": pc.take(vocab.readable, pa.array(cols["token_id"])),
            "token_piece": pc.take(vocab.pieces, pa.array(cols["token_id"])),
            "entropy": pa.array(cols["entropy"]),
            "logprob": pa.array(cols["logprob"]),
            "prob": pa.array(np.exp(cols["logprob"]).astype(np.float32)),
            "rank": pa.array(cols["rank"]),
            # derived from the drawn columns (no more draws, so the other columns stay as they were)
            "varentropy": pa.array((1.3 * cols["entropy"]).astype(np.float32)),
            "margin": pa.array(np.log(cols["topk_probs"][:, 0] / cols["topk_probs"][:, 1]).astype(np.float32)),
            "sampling_entropy": pa.array((0.6 * cols["entropy"]).astype(np.float32)),
            "tempered_entropy": pa.array((0.8 * cols["entropy"]).astype(np.float32)),
            "topk_ids": _lists(topk, TOP_K, n, pa.int32()),
            "topk_pieces": _lists(pc.take(vocab.pieces, pa.array(topk.reshape(-1))), TOP_K, n, pa.string()),
            "topk_probs": _lists(cols["topk_probs"], TOP_K, n, pa.float32()),
            "in_answer": pa.array(np.ones(n, bool)),
        },
        schema=TOKEN_SCHEMA,
    )


def generation_batch(
    layout: Layout, vocab: Vocabulary, cols: dict[str, Any], seqs: np.ndarray, model: str, prompt_set: str
) -> pa.Table:
    counts = cols["counts"]
    n_seq = seqs.size
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    token_ids = pa.ListArray.from_arrays(offsets, pa.array(cols["token_id"]))
    texts = pc.binary_join(pa.ListArray.from_arrays(offsets, pc.take(vocab.readable, pa.array(cols["token_id"]))), "")
    prompt_lengths = layout.prompt_lengths[cols["prompt_index"]]
    prompt_offsets = np.concatenate([[0], np.cumsum(prompt_lengths)]).astype(np.int32)
    # The same prompt tokens for every sample and model: drawn from the prompt's own seed.
    prompt_tokens = np.concatenate(
        [
            vocab.draw(np.random.default_rng([7, int(p)]), int(length))
            for p, length in zip(cols["prompt_index"], prompt_lengths, strict=True)
        ]
    )
    finish = np.where(counts >= np.quantile(layout.lengths, 0.9), "length", "eos").astype(object)
    answers = np.array([prompt_answer(int(p)) for p in cols["prompt_index"]], dtype=object)
    draws = np.random.default_rng([11, zlib.crc32(model.encode()), int(seqs[0])]).random(n_seq)
    correct = draws < model_accuracy(model)
    return pa.table(
        {
            "model": _repeat_string(model, n_seq),
            "prompt_set": _repeat_string(prompt_set, n_seq),
            "prompt_id": pc.take(pa.array(layout.prompt_ids, pa.string()), pa.array(cols["prompt_index"])),
            "sample": pa.array(cols["sample"]),
            "seed": pa.array(1000 * cols["prompt_index"].astype(np.int64) + cols["sample"]),
            "prompt_token_ids": pa.ListArray.from_arrays(pa.array(prompt_offsets), pa.array(prompt_tokens)),
            "token_ids": token_ids,
            "text": texts,
            "finish_reason": pa.array(finish, pa.string()),
            "n_tokens": pa.array(counts.astype(np.int32)),
            "inserted_start": pa.nulls(n_seq, pa.int32()),
            "inserted_end": pa.nulls(n_seq, pa.int32()),
            # outcomes: every prompt has an answer (prompt_answer); a generation is correct with a
            # probability that rises with the checkpoint (model_accuracy); no <think>, no \boxed{}
            "answer": pa.array(answers, pa.string()),
            "extracted_answer": pa.array(np.where(correct, answers, "0").astype(object), pa.string()),
            "correct": pa.array(correct),
            **{name: pa.array(np.zeros(n_seq, dtype=bool)) for name in ("opens_think", "closes_think", "has_boxed")},
        },
        schema=GENERATION_SCHEMA,
    )


def pair_batch(
    layout: Layout,
    cols: dict[str, Any],
    model_a: str,
    model_b: str,
    source: str,
    prompt_set: str,
    distance: float,
    seed: Sequence[int],
) -> pa.Table:
    """Model b against a on a's tokens: a's values are a's own, b's drift with `distance`."""
    n = cols["token_id"].size
    rng = np.random.default_rng([11, int(distance), *seed])
    logprob_a, entropy_a = cols["logprob"], cols["entropy"]
    logprob_b = np.minimum(logprob_a + rng.normal(-0.05 * distance, 0.3 * distance, n), 0).astype(np.float32)
    entropy_b = (entropy_a * np.exp(rng.normal(0.03 * distance, 0.1 * distance, n))).astype(np.float32)
    return pa.table(
        {
            "model_a": _repeat_string(model_a, n),
            "model_b": _repeat_string(model_b, n),
            **_keys(layout, cols, source, prompt_set),
            "token_id": pa.array(cols["token_id"]),
            "logprob_a": pa.array(logprob_a),
            "logprob_b": pa.array(logprob_b),
            "logprob_diff": pa.array(logprob_b - logprob_a),
            "entropy_a": pa.array(entropy_a),
            "entropy_b": pa.array(entropy_b),
            "kl_a_b": pa.array(rng.gamma(0.5, 0.04 * distance, n).astype(np.float32)),
            "kl_b_a": pa.array(rng.gamma(0.5, 0.05 * distance, n).astype(np.float32)),
        },
        schema=PAIR_SCHEMA,
    )


class TableWriter:
    """A parquet file (or, for an output that is a folder, one part file in it) written batch by batch."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        target = path if path.suffix == ".parquet" else path / "part-0.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(target, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=BATCH_ROWS)

    def close(self) -> None:
        self.writer.close()


# The workflow: config, dry run, jobs


@dataclass
class Job:
    rule: str
    inputs: list[str]
    outputs: list[str]
    wildcards: dict[str, str]


def parse_dry_run(text: str) -> list[Job]:
    """Every job of `snakemake -n` output (Snakemake 9's plain format: `rule NAME:` blocks)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", text):
        match = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block.strip())
        if not match:
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines()[1:]:
            key, _, value = line.strip().partition(": ")
            if key in ("input", "output", "wildcards"):
                fields[key] = value
        split = lambda value: [v for v in value.split(", ") if v]  # noqa: E731
        wildcards = dict(kv.split("=", 1) for kv in split(fields.get("wildcards", "")) if "=" in kv)
        jobs.append(Job(match.group(1), split(fields.get("input", "")), split(fields.get("output", "")), wildcards))
    return jobs


def snakemake_command(workdir: Path, config: Path, *args: str) -> list[str]:
    return [*SNAKEMAKE, "-s", str(SNAKEFILE), "-d", str(workdir), "--configfile", str(config), *args]


def dry_run(workdir: Path, config: Path, *args: str) -> str:
    result = subprocess.run(
        snakemake_command(workdir, config, "--dry-run", *args), capture_output=True, text=True, cwd=workdir
    )
    if result.returncode != 0:
        raise RuntimeError(f"dry run failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def model_jobs(jobs: list[Job]) -> set[int]:
    """Indices of the jobs that are not run: MODEL_RULES, rules writing only under DATA_PREFIXES,
    and (to a fixed point) any job whose outputs only such jobs read, e.g. generation shards."""
    readers: dict[str, list[int]] = defaultdict(list)
    for k, job in enumerate(jobs):
        if job.rule not in RECORD_RULES:
            for path in job.inputs:
                readers[path].append(k)
    found = {
        k
        for k, job in enumerate(jobs)
        if job.rule in MODEL_RULES or (job.outputs and all(o.startswith(DATA_PREFIXES) for o in job.outputs))
    }
    changed = True
    while changed:
        changed = False
        for k, job in enumerate(jobs):
            if k in found or job.rule in RECORD_RULES or not job.outputs:
                continue
            if all(readers[o] and set(readers[o]) <= found for o in job.outputs):
                found.add(k)
                changed = True
    return found


def step_jobs(jobs: list[Job]) -> list[Job]:
    skipped = model_jobs(jobs)
    return [job for k, job in enumerate(jobs) if k not in skipped and job.rule not in RECORD_RULES]


def given_files(jobs: list[Job]) -> list[tuple[str, Job]]:
    """(path, producing job) of every file a step reads that a job that is not run would write."""
    skipped = model_jobs(jobs)
    producer = {o: k for k, job in enumerate(jobs) for o in job.outputs}
    read = dict.fromkeys(path for job in step_jobs(jobs) for path in job.inputs)
    return [(path, jobs[producer[path]]) for path in read if producer.get(path) in skipped]


def write_checkpoint_folder(folder: Path) -> None:
    """What planning reads of a local model: a folder with a config and *.safetensors (never loaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": VOCAB_SIZE}))
    (folder / "model.safetensors").write_bytes(b"")


def prompt_answer(prompt_index: int) -> str:
    """The expected answer of the synthetic prompt `prompt_index` (its `answer` field)."""
    return str(prompt_index % 97 + 1)


def model_accuracy(model: str) -> float:
    """Share of correct synthetic generations: 0.4 for the base, 0.05 more per checkpoint step."""
    step = int(model[4:]) if model.startswith("step") else 0
    return min(0.4 + 0.05 * step, 0.9)


def write_prompt_set(path: Path, n_prompts: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = "solve the integral of x over interval find area prove that sum series limit each step".split()
    ids = [f"q{k:06d}" for k in range(n_prompts)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for prompt_id in ids:
            text = " ".join(rng.choice(words, int(rng.integers(8, 30)))).capitalize() + "?"
            record = {
                "id": prompt_id,
                "messages": [{"role": "user", "content": text}],
                "answer": prompt_answer(int(prompt_id[1:])),
            }
            handle.write(json.dumps(record) + "\n")
    return ids


def scale_config(models: list[str]) -> str:
    names = "\n".join(f"  {m}:\n    path: checkpoints/{m}" for m in models)
    return (
        f"models:\n{names}\n"
        "prompt_sets:\n  scale: prompts/scale.jsonl\n"
        "runtime: {device: cpu, threads: 1}\n"
        f"generation: {{n_samples: {SAMPLES}, sampling: {{max_new_tokens: 1024}}}}\n"
        # The base against each checkpoint on the base's generations: what compare_group reads.
        "comparison: {pairs: base, sources: [a]}\n"
    )


def model_names(n: int) -> list[str]:
    return ["base"] + [f"step{k}" for k in range(1, n)]


@dataclass
class Scratch:
    workdir: Path
    config: Path
    jobs: list[Job]


def prepare_scratch(workdir: Path, rows: int, n_models: int) -> Scratch:
    """A working directory with the synthetic inputs of every analysis job of the scale config."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    models = model_names(n_models)
    n_prompts = max(rows // (SAMPLES * TOKENS_PER_SEQUENCE), 1)
    prompt_ids = write_prompt_set(workdir / "prompts" / "scale.jsonl", n_prompts)
    for model in models:
        write_checkpoint_folder(workdir / "checkpoints" / model)
    config = workdir / "bench_scale.yaml"
    config.write_text(scale_config(models))
    jobs = parse_dry_run(dry_run(workdir, config))
    log(f"dry run: {len(jobs)} jobs ({', '.join(sorted({j.rule for j in jobs}))})")

    tokenizer_dir = workdir / "tokenizer"
    pieces, readable, fingerprint = save_tokenizer(tokenizer_dir)
    vocab = Vocabulary.of(pieces, readable)
    rng = np.random.default_rng(1)
    prompt_lengths = rng.integers(PROMPT_TOKENS // 2, PROMPT_TOKENS * 3 // 2, n_prompts)
    layouts = {m: Layout.of(rows, prompt_ids, prompt_lengths, seed=100 + i) for i, m in enumerate(models)}

    token_files: dict[tuple[str, str], list[Path]] = defaultdict(list)  # (model, kind) -> files
    pair_files: dict[tuple[str, str, str], list[Path]] = defaultdict(list)  # (a, b, source) -> files
    for output, job in given_files(jobs):
        path, w = workdir / output, job.wildcards
        if output.startswith("results/models/") and output.endswith("manifest.json"):
            write_manifest(path, w.get("model", path.parent.name), tokenizer_dir, fingerprint)
        elif output.startswith("results/tokens/"):
            source = w.get("source", w["model"] if job.rule != "gather_reference" else "reference")
            if source != w["model"]:
                raise RuntimeError(f"{output}: the scale benchmark writes generated tokens only")
            token_files[(w["model"], "tokens")].append(path)
        elif output.startswith("results/generations/"):
            token_files[(w["model"], "generations")].append(path)
        elif output.startswith("results/shards/") and path.stem in ("tokens", "generations"):
            # Shards read directly by a step: the model's sequences split evenly, in path order.
            token_files[(w["model"], path.stem)].append(path)
        elif output.startswith("results/pairs/"):
            if w["source"] != w["model_a"]:
                raise RuntimeError(f"{output}: the scale benchmark writes pairs on model a's tokens only")
            pair_files[(w["model_a"], w["model_b"], w["source"])].append(path)
        else:
            raise RuntimeError(f"{job.rule}: the scale benchmark does not know how to write {output}")
    for model in models:
        start = time.perf_counter()
        # Pairs that score this model's generations: keyed as this model's tokens, with its values as a's.
        pairs = {key: files for key, files in pair_files.items() if key[0] == model}
        write_model_tables(
            layouts[model], vocab, model, "scale", token_files[(model, "tokens")],
            token_files[(model, "generations")], pairs, models, seed=100 + models.index(model),
        )  # fmt: skip
        log(f"  {model}: {rows:,} rows written in {time.perf_counter() - start:.1f} s")
    return Scratch(workdir, config, jobs)


def write_manifest(path: Path, model: str, tokenizer_dir: Path, fingerprint: str) -> None:
    """A prepared model's manifest with the tokenizer beside it (what token_view and check_tokenizers read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for file in tokenizer_dir.iterdir():
        shutil.copy(file, path.parent / file.name)
    manifest = {
        "model": model,
        "source": {"kind": "path", "location": f"checkpoints/{model}"},
        "resolved_revision": None,
        "trust_remote_code": False,
        "weights": {},
        "tokenizer_sha256": fingerprint,
        "synthetic": "benchmarks/bench_scale.py",
    }
    path.write_text(json.dumps(manifest, indent=2))


def _split_sequences(n_seq: int, parts: int) -> list[np.ndarray]:
    """Contiguous prompt-aligned ranges of sequences, one per file (shards: in path order)."""
    prompts = np.array_split(np.arange(n_seq // SAMPLES), parts)
    return [np.arange(p[0] * SAMPLES, (p[-1] + 1) * SAMPLES) if p.size else np.arange(0) for p in prompts]


def _subset(cols: dict[str, Any], keep_seq: np.ndarray) -> dict[str, Any]:
    """The columns of the sequences where keep_seq is true."""
    keep_row = np.repeat(keep_seq, cols["counts"])
    per_seq = ("counts", "prompt_index", "sample")
    return {k: (v[keep_seq] if k in per_seq else v[keep_row]) for k, v in cols.items()}


def write_model_tables(
    layout: Layout,
    vocab: Vocabulary,
    model: str,
    prompt_set: str,
    token_paths: list[Path],
    generation_paths: list[Path],
    pairs: dict[tuple[str, str, str], list[Path]],
    models: list[str],
    seed: int,
) -> None:
    """The model's token and generation tables, and the pair tables that score its tokens.

    One pass over fixed batches of sequences: each batch's values are drawn once and written to
    every table (so the pair tables' keys and a-values are the token table's), then dropped.
    """
    n_seq = layout.lengths.size
    schemas = {"tokens": TOKEN_SCHEMA, "generations": GENERATION_SCHEMA, "pairs": PAIR_SCHEMA}
    targets: list[tuple[str, tuple[str, str, str] | None, TableWriter, np.ndarray]] = []
    groups: list[tuple[str, list[Path], tuple[str, str, str] | None]] = [
        ("tokens", token_paths, None),
        ("generations", generation_paths, None),
        *(("pairs", files, key) for key, files in pairs.items()),
    ]
    for kind, paths, key in groups:
        for path, part in zip(sorted(paths), _split_sequences(n_seq, len(paths)), strict=True):
            in_part = np.zeros(n_seq, bool)
            in_part[part] = True
            targets.append((kind, key, TableWriter(path, schemas[kind]), in_part))
    for batch, seqs in enumerate(sequence_batches(layout.lengths)):
        everything = token_columns(layout, vocab, seqs, [seed, batch])
        for kind, key, writer, in_part in targets:
            keep = in_part[seqs]
            if not keep.any():
                continue
            cols = everything if keep.all() else _subset(everything, keep)
            if kind == "tokens":
                writer.write(token_batch(layout, vocab, cols, model, prompt_set))
            elif kind == "generations":
                writer.write(generation_batch(layout, vocab, cols, seqs[keep], model, prompt_set))
            else:
                assert key is not None
                distance = float(models.index(key[1]) - models.index(key[0]))
                writer.write(pair_batch(layout, cols, *key, prompt_set, distance, [seed, batch]))
    for *_, writer, _ in targets:
        writer.close()


# Measuring job processes


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        tree[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    return tree


def _descendants(root: int, tree: dict[int, list[int]]) -> list[int]:
    found, stack = [], [root]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


CLOCK = os.sysconf("SC_CLK_TCK")
BOOT = time.time() - float(Path("/proc/uptime").read_text().split()[0])


@dataclass
class ProcessRecord:
    pid: int
    start: float
    last_seen: float
    cpu: float = 0.0
    hwm_mb: float = 0.0


@dataclass
class JobRecord:
    """A job: the script process Snakemake starts and every process below it."""

    script: str
    root: ProcessRecord
    processes: dict[int, ProcessRecord] = field(default_factory=dict)
    peak_tree_mb: float = 0.0

    @property
    def wall(self) -> float:
        return self.root.last_seen - self.root.start

    @property
    def cpu(self) -> float:
        return sum(p.cpu for p in self.processes.values())

    @property
    def peak_mb(self) -> float:
        return max([self.peak_tree_mb] + [p.hwm_mb for p in self.processes.values()])


def _read_process(pid: int) -> tuple[float, float, float, float] | None:
    """(start time, cpu s incl. reaped children, VmHWM MB, VmRSS MB) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as handle:
            status = handle.read()
    except OSError:
        return None
    utime, stime, cutime, cstime = (int(fields[k]) for k in (11, 12, 13, 14))
    start = BOOT + int(fields[19]) / CLOCK
    hwm = re.search(r"VmHWM:\s+(\d+)", status)
    rss = re.search(r"VmRSS:\s+(\d+)", status)
    return (
        start,
        (utime + stime + cutime + cstime) / CLOCK,
        int(hwm.group(1)) / 1024 if hwm else 0.0,
        int(rss.group(1)) / 1024 if rss else 0.0,
    )


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class JobMonitor(threading.Thread):
    """Polls the job processes below `root` (a Snakemake run) until stopped."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.jobs: dict[int, JobRecord] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.poll()
            time.sleep(POLL_S)
        self.poll()

    def poll(self) -> None:
        now = time.time()
        tree = _children()
        for pid in _descendants(self.root, tree):
            if pid in self.jobs:
                continue
            command = _cmdline(pid)
            match = re.search(r"\.snakemake/scripts/tmp\w+\.(\S+)\.py", command)
            if match and "-m snakemake" not in command:
                info = _read_process(pid)
                if info:
                    self.jobs[pid] = JobRecord(match.group(1), ProcessRecord(pid, info[0], now))
                    self.jobs[pid].processes[pid] = self.jobs[pid].root
        for job_pid, job in self.jobs.items():
            tree_rss = 0.0
            for pid in [job_pid, *_descendants(job_pid, tree)]:
                info = _read_process(pid)
                if info is None:
                    continue
                record = job.processes.setdefault(pid, ProcessRecord(pid, info[0], now))
                record.last_seen, record.cpu, record.hwm_mb = now, info[1], max(record.hwm_mb, info[2])
                tree_rss += info[3]
            job.peak_tree_mb = max(job.peak_tree_mb, tree_rss)


@dataclass
class StepResult:
    rule: str
    rows: int
    jobs: int
    wall: float
    cpu: float
    peak_mb: float
    status: str
    snakemake_wall: float
    benchmark: str = ""


def run_step(scratch: Scratch, rule: str, timeout: float) -> StepResult:
    """Run the jobs of one rule (its outputs as targets, only this rule allowed) and measure them."""
    outputs = [o for j in scratch.jobs if j.rule == rule for o in j.outputs]
    command = snakemake_command(
        scratch.workdir, scratch.config, "--cores", "1", "--allowed-rules", rule, "--keep-going", *outputs
    )
    log_path = scratch.workdir / "bench_logs" / f"{rule}.log"
    log_path.parent.mkdir(exist_ok=True)
    start = time.perf_counter()
    with log_path.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=scratch.workdir)
        monitor = JobMonitor(process.pid)
        monitor.start()
        try:
            code = process.wait(timeout=timeout)
            status = "ok" if code == 0 else f"failed ({code}), see {log_path}"
        except subprocess.TimeoutExpired:
            _stop(process)
            status = f"killed after {timeout:.0f} s"
        monitor.stopped.set()
        monitor.join()
    records = list(monitor.jobs.values())
    return StepResult(
        rule=rule,
        rows=0,
        jobs=sum(1 for j in scratch.jobs if j.rule == rule),
        wall=sum(r.wall for r in records),
        cpu=sum(r.cpu for r in records),
        peak_mb=max([r.peak_mb for r in records], default=0.0),
        status=status if records or status != "ok" else "ok (no job process seen)",
        snakemake_wall=time.perf_counter() - start,
        benchmark=snakemake_benchmarks(scratch.workdir, rule),
    )


def run_report(scratch: Scratch, steps: Sequence[str], timeout: float) -> tuple[StepResult, Path]:
    """`snakemake --report` on the steps' outputs: Snakemake's own process, measured by wait4."""
    report = scratch.workdir / "report.zip"
    outputs = [o for j in step_jobs(scratch.jobs) if j.rule in steps for o in j.outputs]
    # Targets before --allowed-rules, which takes every name after it.
    command = snakemake_command(scratch.workdir, scratch.config, "--report", str(report), *outputs)
    command += ["--allowed-rules", *steps]
    log_path = scratch.workdir / "bench_logs" / "report.log"
    start = time.perf_counter()
    with log_path.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=scratch.workdir)
        while True:
            pid, code, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(code)
                status = "ok" if process.returncode == 0 else f"failed ({process.returncode}), see {log_path}"
                break
            if time.perf_counter() - start > timeout:
                _stop(process)
                usage, status = None, f"killed after {timeout:.0f} s"
                break
            time.sleep(POLL_S)
    wall = time.perf_counter() - start
    result = StepResult(
        rule="report (snakemake --report)",
        rows=0,
        jobs=0,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime if usage else 0.0,
        peak_mb=usage.ru_maxrss / 1024 if usage else 0.0,
        status=status,
        snakemake_wall=wall,
    )
    return result, report


def _stop(process: subprocess.Popen) -> None:
    """Stop a Snakemake run this script started, and its jobs (their pids, not by name)."""
    pids = _descendants(process.pid, _children())
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pid in pids:
        try:
            os.kill(pid, 9)
        except OSError:
            pass


def snakemake_benchmarks(workdir: Path, rule: str) -> str:
    """Sum of s and cpu_time, largest max_rss of the rule's `benchmark:` files (empty without any)."""
    files = sorted((workdir / "results" / "benchmarks" / rule).rglob("*.tsv"))
    seconds = cpu = rss = 0.0
    for file in files:
        header, *rows = [line.split("\t") for line in file.read_text().splitlines()]
        for row in rows:
            values = dict(zip(header, row, strict=False))

            def number(key: str, values: dict[str, str] = values) -> float:
                try:
                    return float(values.get(key, "nan"))
                except ValueError:
                    return float("nan")

            seconds += number("s")
            cpu += number("cpu_time")
            rss = max(rss, number("max_rss"))
    return f"{seconds:.1f} s, {cpu:.1f} s CPU, {rss:.0f} MB" if files else ""


def order_steps(jobs: list[Job], chosen: Sequence[str] | None) -> list[str]:
    """The steps of the dry run: dependencies first, then STEP_ORDER, then the dry run's order."""
    steps = list(dict.fromkeys(j.rule for j in step_jobs(jobs)))
    if chosen:
        unknown = [s for s in chosen if s not in steps]
        if unknown:
            log(f"not planned by this workflow, ignored: {', '.join(unknown)} (steps: {', '.join(steps)})")
        steps = [s for s in steps if s in chosen]
    producer = {o: j.rule for j in jobs for o in j.outputs}
    needs = {
        s: {producer[i] for j in jobs if j.rule == s for i in j.inputs if producer.get(i) in steps} - {s} for s in steps
    }
    rank = {s: (STEP_ORDER.index(s) if s in STEP_ORDER else len(STEP_ORDER), k) for k, s in enumerate(steps)}
    ordered: list[str] = []
    while len(ordered) < len(steps):
        ready = [s for s in steps if s not in ordered and needs[s] <= set(ordered)]
        if not ready:  # a cycle cannot happen in a DAG; keep going in rank order regardless
            ready = [s for s in steps if s not in ordered]
        ordered.append(min(ready, key=rank.__getitem__))
    return ordered


def folder_size(path: Path) -> tuple[float, int]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return sum(p.stat().st_size for p in files) / 1e6, len(files)


# Planning


def planning_config(workdir: Path, n_models: int, pairs: str) -> Path:
    """`n_models` local models x PLANNING_SETS prompt sets; the default comparison sources."""
    models = model_names(n_models)
    for model in models:
        write_checkpoint_folder(workdir / "checkpoints" / model)
    sets = []
    for k in range(PLANNING_SETS):
        write_prompt_set(workdir / "prompts" / f"set{k}.jsonl", 20, seed=k)
        sets.append(f"  set{k}: prompts/set{k}.jsonl")
    names = "\n".join(f"  {m}:\n    path: checkpoints/{m}" for m in models)
    config = workdir / f"planning_{n_models}_{pairs}.yaml"
    config.write_text(f"models:\n{names}\nprompt_sets:\n" + "\n".join(sets) + f"\ncomparison: {{pairs: {pairs}}}\n")
    return config


def time_planning(root: Path, n_models: int, pairs: str, timeout: float) -> tuple[str, str]:
    """(jobs, seconds) of `snakemake -n` on a fresh working directory."""
    workdir = root / f"planning_{n_models}_{pairs}"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    config = planning_config(workdir, n_models, pairs)
    start = time.perf_counter()
    process = subprocess.Popen(
        snakemake_command(workdir, config, "--dry-run"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=workdir,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        return "?", f"> {timeout:.0f} (killed)"
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        return "failed", f"{seconds:.1f} ({out.strip().splitlines()[-1] if out.strip() else ''})"
    total = re.search(r"^total\s+(\d+)", out, re.MULTILINE)
    return (total.group(1) if total else "?"), f"{seconds:.1f}"


# Main


def parse_rows(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"rows must be a positive whole number, got {text}")
    return int(value)


@dataclass
class Output:
    rows: int
    what: str
    mb: float
    files: int


def bench_size(root: Path, rows: int, args: argparse.Namespace) -> tuple[list[StepResult], list[Output]]:
    """Write the tables of one size, run and measure each step, then the report; sizes of the outputs."""
    log(f"{rows:,} rows per model, {args.models} models: writing the synthetic tables")
    start = time.perf_counter()
    scratch = prepare_scratch(root / f"rows_{rows}", rows, args.models)
    data_mb, data_files = folder_size(scratch.workdir / "results")
    peak, seconds = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - start
    log(f"written {data_mb:,.0f} MB in {data_files} files in {seconds:.0f} s (peak RSS {peak:,.0f} MB)")
    results = []
    for rule in order_steps(scratch.jobs, args.steps):
        log(f"  {rule}: running {sum(1 for j in scratch.jobs if j.rule == rule)} job(s)")
        result = run_step(scratch, rule, args.step_timeout)
        result.rows = rows
        results.append(result)
        log(f"  {rule}: {result.status}, {result.wall:.1f} s wall, {result.cpu:.1f} s CPU, {result.peak_mb:,.0f} MB")
    outputs = [Output(rows, "synthetic input tables", data_mb, data_files)]
    steps = [r.rule for r in results if r.status == "ok"]
    if steps and not args.skip_report:
        log("  report: snakemake --report")
        result, report = run_report(scratch, steps, args.step_timeout)
        result.rows = rows
        results.append(result)
        log(f"  report: {result.status}, {result.wall:.1f} s wall, {result.peak_mb:,.0f} MB peak RSS")
        if report.exists():
            with zipfile.ZipFile(report) as archive:
                outputs.append(Output(rows, "report.zip", report.stat().st_size / 1e6, len(archive.namelist())))
    for folder in ("results/token_view", "results/figures", "results/comparison", "results/summary"):
        mb, files = folder_size(scratch.workdir / folder)
        if files:
            outputs.append(Output(rows, folder, mb, files))
    if not (args.keep or args.workdir):
        shutil.rmtree(scratch.workdir, ignore_errors=True)
    return results, outputs


def main(argv: Sequence[str] | None = None) -> None:
    global SNAKEFILE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", type=parse_rows, default=[parse_rows(r) for r in DEFAULT_ROWS],
                        help="token rows per model, one run each (default: 1e5 1e6 1e7)")  # fmt: skip
    parser.add_argument("--models", type=int, default=4, help="models in the group: a base and checkpoints (default 4)")
    parser.add_argument("--workdir", type=Path, help="scratch folder, kept (default: a new folder under /tmp, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the default scratch folder")
    parser.add_argument("--steps", nargs="+", help="rules to run (default: every analysis step the dry run plans)")
    parser.add_argument("--skip-steps", action="store_true", help="only time planning")
    parser.add_argument("--skip-report", action="store_true", help="do not build `snakemake --report` of the steps")
    parser.add_argument("--skip-planning", action="store_true", help="do not time `snakemake -n`")
    parser.add_argument("--planning-models", nargs="+", type=int, default=[10, 20, 50])
    parser.add_argument("--planning-timeout", type=float, default=600, help="seconds before a dry run is stopped")
    parser.add_argument("--step-timeout", type=float, default=3600, help="seconds before a step's run is stopped")
    parser.add_argument("--snakefile", type=Path, default=SNAKEFILE, help="the workflow (default: this clone's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.models < 2:
        parser.error("--models: a group needs a base and at least one checkpoint")
    SNAKEFILE = args.snakefile.resolve()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tokenscope-bench-scale-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    log(f"scratch folder: {root}")
    results: list[StepResult] = []
    outputs: list[Output] = []
    planning: list[tuple[int, str, str, str]] = []
    try:
        for rows in [] if args.skip_steps else args.rows:
            size_results, size_outputs = bench_size(root, rows, args)
            results += size_results
            outputs += size_outputs
        for n_models in [] if args.skip_planning else args.planning_models:
            for pairs in ("base", "all"):
                log(f"planning: {n_models} models x {PLANNING_SETS} prompt sets, pairs: {pairs}")
                jobs, seconds = time_planning(root, n_models, pairs, args.planning_timeout)
                planning.append((n_models, pairs, jobs, seconds))
                log(f"  {jobs} jobs, {seconds} s")
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(root, ignore_errors=True)
    print_report(results, outputs, planning, args.models)
    if args.json:
        record = {"steps": results, "outputs": outputs, "planning": planning}
        args.json.write_text(json.dumps(record, indent=2, default=lambda o: o.__dict__))


def print_report(
    results: list[StepResult], outputs: list[Output], planning: list[tuple[int, str, str, str]], n_models: int
) -> None:
    if results:
        print(f"\nAnalysis steps, {n_models} models (a base and {n_models - 1} checkpoints), one job at a time:\n")
        print("| step | rows/model | jobs | wall s | CPU s | peak RSS MB | status |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in results:
            print(f"| {r.rule} | {r.rows:,} | {r.jobs} | {r.wall:.1f} | {r.cpu:.1f} | {r.peak_mb:,.0f} | {r.status} |")
        with_benchmark = [r for r in results if r.benchmark]
        if with_benchmark:
            print("\nSnakemake's benchmark: files (sampled every 30 s; short jobs read low):")
            for r in with_benchmark:
                print(f"  {r.rule} at {r.rows:,} rows/model: {r.benchmark}")
    if outputs:
        print("\nOutputs:")
        for o in outputs:
            print(f"  {o.rows:,} rows/model: {o.what}: {o.mb:,.1f} MB, {o.files:,} files")
        largest = max(o.rows for o in outputs)
        shown = [o for o in outputs if o.rows == largest and o.what in ("results/token_view", "report.zip")]
        print(
            f"Largest run ({largest:,} rows/model): "
            + ("; ".join(f"{o.what} {o.mb:,.1f} MB in {o.files:,} files" for o in shown) or "no token view or report")
        )
    if planning:
        print(f"\nPlanning (`snakemake -n`, {PLANNING_SETS} prompt sets):\n")
        print("| models | pairs | jobs | seconds |")
        print("| ---: | --- | ---: | ---: |")
        for n_models, pairs, jobs, seconds in planning:
            print(f"| {n_models} | {pairs} | {jobs} | {seconds} |")


if __name__ == "__main__":
    main()
