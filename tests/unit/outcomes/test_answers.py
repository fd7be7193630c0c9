"""Final answers (tokenscope.outcomes.answers): extraction, normalised comparison and format facts,
on a table of (expected, generated text, correct?) cases that spells out docs/answers.md."""

from __future__ import annotations

import pytest

from tokenscope.errors import ConfigError, ResultFileError
from tokenscope.outcomes.answers import (
    OUTCOME_COLUMNS,
    AnswerOptions,
    answer_params,
    answers_match,
    answers_sha256,
    check_answers_config,
    extract_answer,
    format_facts,
    grade,
    grade_all,
    last_boxed,
    normalize_answer,
)

THINK = "<think>\nSome reasoning.\n</think>\n"

# (expected answer, generated text, correct?) with the default extraction (last \boxed{}) and tolerance.
CASES = [
    # extraction
    ("42", THINK + "The answer is \\boxed{42}.", True),
    ("42", THINK + "First \\boxed{41}, no wait: \\boxed{42}", True),  # the LAST box
    ("41", THINK + "First \\boxed{41}, no wait: \\boxed{42}", False),
    ("42", THINK + "The answer is 42.", False),  # no box, no answer
    ("42", "\\boxed{42", False),  # cut off before the box closes
    ("42", "\\boxed{42} and then \\boxed{4", True),  # an unclosed last box is not an answer
    ("\\frac{3}{4}", "so \\boxed{\\frac{3}{4}}", True),  # nested braces
    ("\\{1, 2\\}", "the set \\boxed{\\{1, 2\\}}", True),  # escaped braces are literal
    ("7", "\\boxed {7}", True),  # whitespace between the command and its brace
    ("", "\\boxed{}", False),  # an empty box matches nothing
    # whitespace, $, \text{}, \left/\right, \dfrac
    ("x + 1", "\\boxed{x+1}", True),
    ("12", "\\boxed{$12$}", True),
    ("12", "\\boxed{\\$12}", True),  # a dollar amount
    ("Tom", "\\boxed{\\text{Tom}}", True),
    ("tom", "\\boxed{\\textbf{Tom}}", True),  # case folded
    ("12", "\\boxed{12 \\text{ cm}}", True),  # a unit in \text{} after a number
    ("12", "\\boxed{12 cm}", False),  # a bare unit word is not dropped
    ("\\left( 1, 2 \\right)", "\\boxed{(1,2)}", True),
    ("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}", True),
    ("\\frac{1}{2}", "\\boxed{\\tfrac12}", True),
    ("5", "\\boxed{5.}", True),  # a trailing period
    ("3", "\\boxed{x = 3}", True),  # a leading one-letter assignment
    ("90", "\\boxed{90^\\circ}", True),  # degrees
    ("\\sqrt{2}", "\\boxed{\\sqrt{2}}", True),  # not a number: equal text
    ("\\sqrt{2}", "\\boxed{\\sqrt{3}}", False),
    # numbers within the tolerance
    ("0.5", "\\boxed{1/2}", True),
    ("3/4", "\\boxed{\\frac{3}{4}}", True),
    ("0.75", "\\boxed{\\frac34}", True),
    ("-0.75", "\\boxed{-\\frac{3}{4}}", True),
    ("-0.75", "\\boxed{\\frac{-3}{4}}", True),
    ("0.75", "\\boxed{\\frac{3}{4}}", True),
    ("0.333", "\\boxed{\\frac{1}{3}}", False),  # a rounded decimal is not the fraction at 1e-6
    ("1000", "\\boxed{1,000}", True),  # thousands separators
    ("1,2", "\\boxed{12}", False),  # a list, not thousands
    ("10", "\\boxed{10.0}", True),
    ("10", "\\boxed{10.00001}", True),  # 1e-6 relative: |diff| 1e-5 <= 1e-6 x 10
    ("10", "\\boxed{10.0001}", False),
    ("2500", "\\boxed{2.5e3}", True),
    ("-3", "\\boxed{\u22123}", True),  # a Unicode minus sign
    ("1/0", "\\boxed{1/0}", True),  # equal text (no number)
    # percentages: 25% stands for 0.25 and for 25; two percentages compare their numbers
    ("25%", "\\boxed{0.25}", True),
    ("0.25", "\\boxed{25\\%}", True),
    ("25", "\\boxed{25\\%}", True),
    ("50%", "\\boxed{0.5\\%}", False),
    ("50\\%", "\\boxed{50%}", True),
    ("0.25", "\\boxed{25}", False),
    # wrong answers
    ("42", "\\boxed{24}", False),
    ("Tom", "\\boxed{Anna}", False),
]


@pytest.mark.parametrize(("expected", "text", "correct"), CASES)
def test_cases(expected, text, correct):
    assert grade(text, expected).correct is correct


def test_the_table_is_large_and_mixed():
    assert len(CASES) >= 30
    assert 10 <= sum(correct for _, _, correct in CASES) <= len(CASES) - 10


def test_tolerance():
    assert not answers_match("10", "10.0001")  # |diff| 1e-4 > 1e-6 x 10
    assert answers_match("10", "10.0001", tolerance=1e-5)
    assert not answers_match("10", "10.00001", tolerance=0.0)
    assert answers_match("0.1", "0.1000001")  # absolute below 1: 1e-7 <= 1e-6
    assert not answers_match("0.1", "0.100002")
    assert answers_match("0.333", "\\frac{1}{3}", tolerance=1e-3)
    assert answers_match("1e9", "1000000001", tolerance=1e-6)  # relative above 1


@pytest.mark.parametrize(
    ("answer", "normalized"),
    [
        ("  $ \\dfrac{1}{2} $ ", "\\frac{1}{2}"),
        ("\\left[ 0, 1 \\right)", "[0,1)"),
        ("\\text{Tom}", "tom"),
        ("12\\,345", "12345"),
        ("y = -2", "-2"),
        ("\\boxed{5}", "5"),
        ("\\textbf{yes}.", "yes"),
        ("X^2 + 1", "x^2+1"),
    ],
)
def test_normalize(answer, normalized):
    assert normalize_answer(answer) == normalized


def test_extraction_with_a_pattern():
    options = AnswerOptions(pattern=r"[Aa]nswer:\s*(\S+)")
    text = "Answer: 3\nActually, answer: 4"
    assert extract_answer(text, options.compiled) == "4"  # the last match
    assert grade(text, "4", options).correct is True
    assert grade("no answer here \\boxed{4}", "4", options).extracted_answer is None
    assert grade("no answer here \\boxed{4}", "4", options).has_boxed is True  # a format fact, not the pattern's
    # an optional group that did not take part is skipped
    assert extract_answer("A: x\nA:", AnswerOptions(pattern=r"A:\s*(x)?").compiled) == "x"


def test_bad_patterns_name_the_key():
    with pytest.raises(ConfigError, match=r"^answers\.patterns\.mine: the pattern '\(unclosed' does not compile"):
        check_answers_config({"patterns": {"mine": "(unclosed"}}, ["mine"])
    with pytest.raises(ConfigError, match=r"^answers\.patterns\.mine: the pattern 'abc' has no group"):
        check_answers_config({"patterns": {"mine": "abc"}}, ["mine"])
    with pytest.raises(ConfigError, match=r"^answers\.patterns: unknown prompt set 'nope'"):
        check_answers_config({"patterns": {"nope": "(a)"}}, ["mine"])
    check_answers_config({"patterns": {"mine": r"=\s*(\d+)"}, "tolerance": 0.0}, ["mine"])
    check_answers_config(None, [])


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        (THINK + "\\boxed{1}", (True, True, True)),
        ("  \n<think> a </think> no box", (True, True, False)),
        ("a </think> \\boxed{1}", (False, True, True)),  # a template that opened <think> itself
        ("Sure! <think> ...", (False, False, False)),
        ("<think> ran out \\boxed{1", (True, False, False)),
    ],
)
def test_format_facts(text, facts):
    assert format_facts(text) == facts


def test_grade_without_an_answer():
    result = grade(THINK + "\\boxed{7}", None)
    assert result.answer is None and result.correct is None and result.extracted_answer == "7"


def test_grade_all_is_grade_of_each():
    texts = [text for _, text, _ in CASES]
    expected = [answer for answer, _, _ in CASES]
    columns = grade_all(texts, expected)
    rows = [grade(text, answer) for text, answer in zip(texts, expected, strict=True)]
    for name in columns:
        assert columns[name] == [getattr(row, name) for row in rows]


def test_last_boxed_ignores_longer_commands():
    assert last_boxed("\\boxedx{1} \\boxed{2}") == "2"
    assert last_boxed("nothing") is None


def test_answer_params_carry_only_what_changes_the_grades():
    config = {"patterns": {"a": r"(\d+)"}, "tolerance": 1e-3}
    assert answer_params(config, "a", None) == {"pattern": r"(\d+)"}
    assert answer_params(config, "b", "abc") == {"pattern": None, "answers_sha256": "abc", "tolerance": 1e-3}
    assert answers_sha256({"p1": None}) is None
    assert answers_sha256({"p1": "1", "p2": None}) == answers_sha256({"p1": "1"}) != answers_sha256({"p1": "2"})
    assert AnswerOptions.from_params(answer_params(config, "a", "x")) == AnswerOptions(r"(\d+)", 1e-3)


def test_gather_grades_the_shards_into_one_table(tmp_path):
    """The gather (rule gather_generation): shards streamed in order, every column but the outcome
    ones as written, the outcome ones graded with the set's answers and options."""
    import pyarrow.parquet as pq

    from tokenscope.outcomes.answers import gather_graded
    from tokenscope.scoring.tables import GENERATION_SCHEMA, GeneratedRows, generation_table

    texts = [
        ["<think>x</think> \\boxed{7}", "Answer: 8 \\boxed{9}"],
        ["no answer", "<think> \\boxed{1/2}"],
    ]
    ids = [["p1", "p2"], ["p3", "p4"]]
    files = []
    for shard, (shard_ids, shard_texts) in enumerate(zip(ids, texts, strict=True)):
        rows = GeneratedRows(
            prompt_ids=shard_ids,
            samples=[0, 0],
            seeds=[1, 2],
            prompt_token_ids=[[1, 2], [3]],
            token_ids=[[4], [5, 6]],
            texts=shard_texts,
            finish_reasons=["eos", "length"],
        )
        table = generation_table(rows, model="m", prompt_set="s")
        assert table.column("answer").null_count == 2 and table.column("correct").null_count == 2
        files.append(tmp_path / f"{shard}.parquet")
        pq.write_table(table, files[-1])
    expected = {"p1": "7", "p2": "8", "p3": "3", "p4": "0.5"}
    out = tmp_path / "gathered.parquet"
    assert gather_graded(files, out, expected, AnswerOptions(), batch_rows=1) == 4
    gathered = pq.read_table(out)
    assert gathered.schema.equals(pq.read_schema(files[0]), check_metadata=True)
    assert gathered.schema.names == GENERATION_SCHEMA.names
    assert gathered.schema.metadata == GENERATION_SCHEMA.metadata
    rows = gathered.to_pydict()
    assert rows["prompt_id"] == ["p1", "p2", "p3", "p4"] and rows["n_tokens"] == [1, 2, 1, 2]
    assert rows["answer"] == ["7", "8", "3", "0.5"]
    assert rows["extracted_answer"] == ["7", "9", None, "1/2"]
    assert rows["correct"] == [True, False, False, True]
    assert rows["opens_think"] == [True, False, False, True]
    assert rows["has_boxed"] == [True, True, False, True]
    # Another pattern, a prompt without an answer: regraded from the same shards.
    pattern = AnswerOptions(pattern=r"Answer:\s*(\d+)")
    gather_graded(files, out, {"p2": "8"}, pattern)
    rows = pq.read_table(out).to_pydict()
    assert rows["extracted_answer"] == [None, "8", None, None]
    assert rows["correct"] == [None, True, None, None] and rows["answer"] == [None, "8", None, None]


def two_generations(texts: list[str]) -> dict:
    """generation_table's arguments for two generations of `texts`, outcomes left out."""
    from tokenscope.scoring.tables import GeneratedRows

    rows = GeneratedRows(
        prompt_ids=["p1", "p2"],
        samples=[0, 0],
        seeds=[1, 2],
        prompt_token_ids=[[1], [2]],
        token_ids=[[3], [4, 5]],
        texts=texts,
        finish_reasons=["eos", "length"],
    )
    return {"rows": rows, "model": "m", "prompt_set": "s"}


def test_generation_table_takes_the_outcome_columns_its_caller_graded():
    """scoring.tables.generation_table does not grade: the outcome columns are the ones given, else null."""
    from tokenscope.scoring.tables import generation_table

    texts = ["<think>x</think> \\boxed{7}", "no answer"]
    graded = grade_all(texts, ["7", None])
    table = generation_table(**two_generations(texts), outcomes=graded)
    assert {name: table.column(name).to_pylist() for name in OUTCOME_COLUMNS} == graded
    ungraded = generation_table(**two_generations(texts))
    assert all(ungraded.column(name).null_count == 2 for name in OUTCOME_COLUMNS)
    assert ungraded.drop_columns(list(OUTCOME_COLUMNS)).equals(table.drop_columns(list(OUTCOME_COLUMNS)))


def test_gather_refuses_a_shard_without_the_outcome_columns_in_one_line_naming_it(tmp_path):
    """A shard written before the outcome columns existed: a ResultFileError naming the file, not a traceback."""
    import pyarrow.parquet as pq

    from tokenscope.outcomes.answers import gather_graded
    from tokenscope.scoring.tables import generation_table

    old = tmp_path / "00000.parquet"
    pq.write_table(generation_table(**two_generations(["a", "b"])).drop_columns(list(OUTCOME_COLUMNS)), old)
    with pytest.raises(ResultFileError) as caught:
        gather_graded([old], tmp_path / "out.parquet", {})
    message = str(caught.value)
    assert message.startswith(f"{old}: no column(s) {list(OUTCOME_COLUMNS)}; rerun its generate_shard job")
    assert "\n" not in message and not (tmp_path / "out.parquet").exists()
