"""Sharded generation and teacher forcing through the workflow (rules generate_shard, teacher_force,
gather_generation, gather_tokens, gather_reference): what reruns when prompts are appended or
edited, ids that look like shard names, shards without reference answers, and that a small shard
size gives the tables of one shard on 10^5 generated tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from helpers.paths import TEST_CONFIGS
from helpers.tables import assert_same_rows
from helpers.tiny_models import save_tiny_checkpoint
from helpers.workflow_runner import parse_jobs, snakemake

pytestmark = pytest.mark.slow

# Ids that look like shard names (and a shard path): shards are named by index, never by id.
IDS = ["00001", "shard-00000", "00000", "99999", "x"]
GATHERED = [
    "results/generations/ids/base.parquet",
    "results/tokens/ids/base/base.parquet",
    "results/tokens/ids/base/reference.parquet",
]
ANSWERED = {"00001", "x"}  # the prompts with a reference answer: shard 00001 has none
DOWNSTREAM = "results/analysis/ids/base/base/describe.csv"
TARGETS = [*GATHERED, DOWNSTREAM]


def prompt_line(prompt_id: str, text: str | None = None, reference: str | None = None) -> str:
    content = text or f"Prompt {prompt_id}: what is {len(prompt_id)} + 2?"
    record = {"id": prompt_id, "messages": [{"role": "user", "content": content}]}
    if reference is not None:
        record["reference"] = reference
    return json.dumps(record) + "\n"


def append(path: Path, *ids: str) -> None:
    time.sleep(1)  # a newer mtime than the outputs, as a user's edit would have
    path.write_text(path.read_text() + "".join(prompt_line(i) for i in ids))


def jobs(workdir: Path) -> set[tuple[str, str]]:
    """(rule, shard or '') of every job a dry run of TARGETS plans."""
    found = snakemake(workdir, "shards.yaml", "--dry-run", *TARGETS).stdout
    return {(rule, wildcards.get("shard", "")) for rule, wildcards in parse_jobs(found)}


DOWNSTREAM_JOBS = {("gather_generation", ""), ("gather_tokens", ""), ("gather_reference", ""), ("analyze_tokens", "")}


def shard_jobs(shard: str) -> set[tuple[str, str]]:
    """A shard's jobs: its generation and its teacher forcing."""
    return {("generate_shard", shard), ("teacher_force", shard)}


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> Path:
    """TARGETS of tests/configs/shards.yaml run: 5 prompts in shards of 2 (00000 to 00002)."""
    workdir = tmp_path_factory.mktemp("shards")
    save_tiny_checkpoint(workdir / "checkpoints" / "base", seed=0)
    (workdir / "prompts").mkdir()
    lines = (prompt_line(i, reference=f"{len(i)} + 2 = {len(i) + 2}" if i in ANSWERED else None) for i in IDS)
    (workdir / "prompts" / "ids.jsonl").write_text("".join(lines))
    snakemake(workdir, "shards.yaml", "--cores", "2", *TARGETS)
    return workdir


def test_ids_like_shard_names_are_generated(sharded_run):
    shards = sorted(p.name for p in (sharded_run / "results" / "shards" / "ids" / "base").iterdir())
    assert shards == ["00000", "00001", "00002"]
    generations = pq.read_table(sharded_run / GATHERED[0]).to_pydict()
    assert sorted(zip(generations["prompt_id"], generations["sample"], strict=True)) == sorted(
        (i, s) for i in IDS for s in (0, 1)
    )
    # The gather keeps shard order (within a shard, rows come in the order sequences finished);
    # each shard holds its own prompts only.
    shard_of = {prompt_id: IDS.index(prompt_id) // 2 for prompt_id in IDS}
    gathered_shards = [shard_of[prompt_id] for prompt_id in generations["prompt_id"]]
    assert gathered_shards == sorted(gathered_shards)
    for shard, ids in (("00000", IDS[:2]), ("00001", IDS[2:4]), ("00002", IDS[4:])):
        table = pq.read_table(sharded_run / "results" / "shards" / "ids" / "base" / shard / "tokens.parquet")
        assert set(table.column("prompt_id").to_pylist()) == set(ids)
        assert table.schema.metadata[b"tokenscope_table"] == b"tokens"
    tokens = pq.read_table(sharded_run / GATHERED[1])
    assert tokens.num_rows == sum(generations["n_tokens"])
    # teacher forcing in the same shards; the shard without reference answers gives an empty table
    reference = pq.read_table(sharded_run / GATHERED[2])
    answered_in_file_order = [i for i in IDS if i in ANSWERED]
    assert list(dict.fromkeys(reference.column("prompt_id").to_pylist())) == answered_in_file_order
    assert set(reference.column("source").to_pylist()) == {"reference"}
    empty = pq.read_table(sharded_run / "results" / "shards" / "ids" / "base" / "00001" / "reference.parquet")
    assert empty.num_rows == 0 and empty.schema.equals(reference.schema, check_metadata=True)


def test_edits_rerun_only_the_shards_whose_prompts_change(sharded_run):
    path = sharded_run / "prompts" / "ids.jsonl"
    assert jobs(sharded_run) == set()
    # Touched, prompts unchanged: no shard reruns (the file is ancient to them; their digests hold).
    time.sleep(1)
    path.touch()
    assert jobs(sharded_run) == set()

    # One prompt appended: the last shard [4, 5) becomes [4, 6); 00000 and 00001 stay.
    append(path, "y")
    assert jobs(sharded_run) == shard_jobs("00002") | DOWNSTREAM_JOBS
    snakemake(sharded_run, "shards.yaml", "--cores", "2", *TARGETS)
    assert jobs(sharded_run) == set()

    # Two more: 00002 is full and unchanged, so only the new shard 00003 runs.
    append(path, "z1", "z2")
    assert jobs(sharded_run) == shard_jobs("00003") | DOWNSTREAM_JOBS
    snakemake(sharded_run, "shards.yaml", "--cores", "2", *TARGETS)
    generations = pq.read_table(sharded_run / GATHERED[0])
    assert generations.num_rows == 2 * (len(IDS) + 3)

    # A prompt edited in place: its shard only.
    time.sleep(1)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = prompt_line(IDS[2], "An edited question?")
    path.write_text("".join(lines))
    assert jobs(sharded_run) == shard_jobs("00001") | DOWNSTREAM_JOBS


def test_small_shards_give_the_tables_of_one_shard(tmp_path):
    """At least 10^5 generated tokens: one shard (shard_size 512) and shards of 48 prompts (three,
    the last of 32) give the same gathered tables (generations, tokens, teacher-forced reference
    answers), rows sorted by (prompt_id, sample, step): ids, integers and strings (token ids,
    texts, token strings, finish reasons) exactly equal, float columns within 1e-5 relative and
    absolute (helpers/tables.py: a sequence batched beside other sequences gets float32 logits
    that differ in the last bits), and rank and top-k order equal but where two logits tie within
    that rounding (measured: 3 ranks, 4 alternative lists)."""
    save_tiny_checkpoint(tmp_path / "checkpoints" / "base", seed=0)
    questions = ["What is 2 + 2?", "Think step by step.", "Héllo wörld 日本語?", "Find the area under f(x) = x^2."]
    prompts = tmp_path / "prompts" / "many.jsonl"
    prompts.parent.mkdir()
    prompts.write_text(
        "".join(
            prompt_line(f"p{i:03d}", questions[i % 4] * (1 + i % 3), f"The answer is {i}. " * (1 + i % 5))
            for i in range(128)
        )
    )
    config = yaml.safe_load((TEST_CONFIGS / "shards_scale.yaml").read_text())
    tables = {}
    for shard_size in (512, 48):
        workdir = tmp_path / f"shard_size_{shard_size}"
        workdir.mkdir()
        for folder in ("checkpoints", "prompts"):
            (workdir / folder).symlink_to(tmp_path / folder)
        config["generation"]["shard_size"] = shard_size
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        snakemake(
            workdir,
            str(path),
            "--cores",
            "2",
            "results/generations/many/base.parquet",
            "results/tokens/many/base/base.parquet",
            "results/tokens/many/base/reference.parquet",
        )
        shards = sorted(p.name for p in (workdir / "results" / "shards" / "many" / "base").iterdir())
        assert len(shards) == -(-128 // shard_size)
        tables[shard_size] = {
            "generations": pq.read_table(workdir / "results" / "generations" / "many" / "base.parquet"),
            "tokens": pq.read_table(workdir / "results" / "tokens" / "many" / "base" / "base.parquet"),
            "reference": pq.read_table(workdir / "results" / "tokens" / "many" / "base" / "reference.parquet"),
        }
    whole, sharded = tables[512], tables[48]
    assert whole["tokens"].num_rows >= 100_000
    assert whole["generations"].num_rows == 128 * 4
    assert whole["reference"].num_rows > 128 * 5 and set(whole["reference"].column("prompt_id").to_pylist()) == {
        f"p{i:03d}" for i in range(128)
    }
    for table in ("generations", "tokens", "reference"):
        assert_same_rows(sharded[table], whole[table])
