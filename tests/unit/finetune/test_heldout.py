"""The held-out prompt set of the default run (config/prompts/reasoning_heldout.jsonl): problems of the
finetune's reasoning families with answers, none of them in the training data of the finetune the
default config runs, and the file is exactly what its writer function gives."""

from __future__ import annotations

import json

import yaml

from tokenscope.finetune.config import FinetuneConfig
from tokenscope.finetune.data import (
    GENERATORS,
    HELDOUT_EXCLUDE_N,
    HELDOUT_FILE,
    SYSTEM_PROMPT,
    generate_examples,
    heldout_examples,
    heldout_prompt_set,
    problem_key,
)
from tokenscope.inputs.prompts import load_prompt_set

from helpers.paths import REPO

DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
NAME = "reasoning_heldout"


def training_examples():
    """The finetune's training problems as the default config builds them (finetune.training.
    build_training_set: generate_examples(n_examples, seed), FinetuneConfig defaults filled in)."""
    section = {key: value for key, value in DEFAULT_CONFIG["finetune"].items() if key != "base"}
    config = FinetuneConfig.from_dict(section)
    return config, generate_examples(config.n_examples, config.seed)


def test_the_file_is_the_writer_functions_output():
    """Regenerate with `python -m tokenscope.finetune.data` when the generators change."""
    assert (REPO / HELDOUT_FILE).read_text(encoding="utf-8") == heldout_prompt_set()


def test_no_held_out_problem_is_in_the_training_data():
    """Against the file as committed and the generator as it is now: a changed generator (or a
    changed finetune n_examples or seed) that puts a held-out problem into training fails here."""
    config, training = training_examples()
    assert config.n_examples <= HELDOUT_EXCLUDE_N and config.seed == 0  # what the writer excludes
    prompts = load_prompt_set(REPO / HELDOUT_FILE)
    questions = {prompt.messages[1]["content"] for prompt in prompts}
    assert not questions & {example.question for example in training}
    # Up to wording too: the file's problems, rebuilt from the writer, are none of the training ones.
    held_out = heldout_examples(len(prompts))
    assert [example.question for example in held_out] == [prompt.messages[1]["content"] for prompt in prompts]
    assert not {problem_key(example) for example in held_out} & {problem_key(example) for example in training}


def test_exclusion_covers_every_training_set_up_to_its_bound():
    """The writer excludes the first HELDOUT_EXCLUDE_N problems of seed 0, which holds the training
    set of every n_examples up to that bound (a longer set starts with the shorter one)."""
    held_out = {problem_key(example) for example in heldout_examples(16)}
    assert not held_out & {problem_key(example) for example in generate_examples(HELDOUT_EXCLUDE_N, 0)}
    # Without the exclusion the held-out stream does meet training problems: the exclusion is doing work.
    drawn = heldout_examples(200, exclude_seeds=())
    training = {problem_key(example) for example in generate_examples(HELDOUT_EXCLUDE_N, 0)}
    assert any(problem_key(example) in training for example in drawn)


def test_the_prompt_set_is_a_graded_set_of_every_family():
    prompts = load_prompt_set(REPO / HELDOUT_FILE)
    assert len(prompts) == 16 and len({p.id for p in prompts}) == 16
    assert all(p.answer is not None and p.reference is None for p in prompts)
    assert all([m["role"] for m in p.messages] == ["system", "user"] for p in prompts)
    assert all(p.messages[0]["content"] == SYSTEM_PROMPT for p in prompts)
    families = {GENERATORS_OF_KIND.get(p.metadata["kind"], p.metadata["kind"]) for p in prompts}
    assert families == set(GENERATORS)
    for prompt, example in zip(prompts, heldout_examples(16), strict=True):
        assert prompt.answer == example.answer and prompt.metadata == {"kind": example.kind}
        assert json.loads(json.dumps(prompt.answer)) == str(int(prompt.answer))  # integers, as text


# Generators with two variants name their problems by variant.
GENERATORS_OF_KIND = {
    "speed": "distance",
    "rectangle_area": "rectangle",
    "rectangle_perimeter": "rectangle",
}


def test_the_default_run_generates_it_and_math24_has_no_answers():
    assert DEFAULT_CONFIG["prompt_sets"][NAME] == HELDOUT_FILE
    assert NAME in DEFAULT_CONFIG["generation"]["prompt_sets"]
    assert all(p.answer is None for p in load_prompt_set(REPO / "config" / "prompts" / "math24.jsonl"))
