"""Final answers of generations: extraction, normalised comparison with the expected answer, format facts.

The rules are documented in docs/answers.md (keep the two in step). In short:

- extraction: the content of the LAST complete `\\boxed{...}` of the generation (braces nested,
  `\\{` and `\\}` are literal), or, with a per-prompt-set pattern (config `answers.patterns`), the
  first group of the pattern's last match;
- comparison: equal after normalisation (whitespace, `$`, `\\text{}` and friends, `\\left`/`\\right`,
  `\\dfrac`/`\\tfrac`, a trailing period, a leading `x =`, case), or both numbers equal within a
  relative tolerance (integers, decimals, `1,000`, `a/b`, `\\frac{a}{b}`, percentages);
- format facts: the generation opens with `<think>`, closes `</think>`, has a complete `\\boxed{}`.

Torch- and pyarrow-free: planning (DAG time) checks the config's patterns with it, and the gather
job grades each generation with it (a Python loop over generations, not tokens).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenscope.errors import ConfigError, ResultFileError

DEFAULT_TOLERANCE = 1e-6
BOXED = "\\boxed"
OPEN_THINK, CLOSE_THINK = "<think>", "</think>"

# The generations-table columns this module fills (docs/schema.md), in table order.
OUTCOME_COLUMNS = ("answer", "extracted_answer", "correct", "opens_think", "closes_think", "has_boxed")


# --- extraction ---------------------------------------------------------------------------------


def _group_end(text: str, start: int) -> int | None:
    """Index just past the `}` closing the `{` at text[start], or None when it never closes."""
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # an escaped character (\\{, \\}) does not open or close a group
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def boxed_contents(text: str, command: str = BOXED) -> list[str]:
    """Contents of every complete `\\boxed{...}` of `text`, in order (whitespace after the command allowed)."""
    found: list[str] = []
    position = 0
    while (start := text.find(command, position)) >= 0:
        position = start + len(command)
        if position < len(text) and text[position].isalpha():  # \\boxedx: another command
            continue
        brace = position
        while brace < len(text) and text[brace] in " \t":
            brace += 1
        if brace >= len(text) or text[brace] != "{":
            continue
        end = _group_end(text, brace)
        if end is None:
            continue  # cut off (a generation stopped by max_new_tokens): not an answer
        found.append(text[brace + 1 : end - 1])
        position = end
    return found


def last_boxed(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}`, stripped; None when there is none."""
    contents = boxed_contents(text)
    return contents[-1].strip() if contents else None


def compile_pattern(pattern: str, key: str) -> re.Pattern[str]:
    """An extraction pattern: must compile and have a group (the answer); errors name the config key."""
    try:
        compiled = re.compile(pattern)
    except (re.error, TypeError) as error:
        raise ConfigError(f"{key}: the pattern {pattern!r} does not compile ({error})") from None
    if compiled.groups < 1:
        raise ConfigError(f"{key}: the pattern {pattern!r} has no group; its first group is the answer")
    return compiled


def extract_answer(text: str, pattern: re.Pattern[str] | None = None) -> str | None:
    """The generation's final answer: the last `\\boxed{}` (pattern None), else the first group of
    the pattern's last match in which that group took part; stripped. None when none is found."""
    if pattern is None:
        return last_boxed(text)
    answer = None
    for match in pattern.finditer(text):
        if match.group(1) is not None:
            answer = match.group(1)
    return None if answer is None else answer.strip()


# --- normalisation and comparison ---------------------------------------------------------------

# Commands whose argument is kept and the command dropped: \\text{5 apples} -> 5 apples.
_UNWRAPPED = ("text", "textbf", "textit", "textrm", "textnormal", "mathrm", "mathbf", "mbox", "boxed")
_UNIT_AFTER_NUMBER = re.compile(r"^(?P<value>.*[0-9}%])\s*\\(?:text|mbox|textrm|mathrm)\s*\{\s*[A-Za-z][^{}]*\}$")


def _unwrap(text: str, command: str) -> str:
    """\\command{X} -> X, braces nested, every occurrence."""
    needle = "\\" + command
    out, position = [], 0
    while (start := text.find(needle, position)) >= 0:
        after = start + len(needle)
        if after < len(text) and text[after].isalpha():  # a longer command (\\textbf for \\text)
            out.append(text[position:after])
            position = after
            continue
        brace = after
        while brace < len(text) and text[brace] == " ":
            brace += 1
        end = _group_end(text, brace) if brace < len(text) and text[brace] == "{" else None
        if end is None:
            out.append(text[position:after])
            position = after
            continue
        out.append(text[position:start])
        out.append(text[brace + 1 : end - 1])
        position = end
    out.append(text[position:])
    return "".join(out)


def normalize_answer(answer: str) -> str:
    """The form two answers are compared in (docs/answers.md, "Normalisation"), in this order:

    a Unicode minus sign read as `-`; a trailing unit in \\text{} after a number dropped
    (`12 \\text{ cm}` -> `12`); \\text{X}, \\textbf{X}, \\mathrm{X}, \\mbox{X}, \\boxed{X} (and the
    like) -> X; \\left and \\right dropped; \\dfrac and \\tfrac -> \\frac; `\\%` -> `%`; `$` (and
    `\\$`) dropped; degree marks (`^\\circ`) dropped; LaTeX spacing (`\\,` `\\;` `\\:` `\\!` `\\ `
    `~`) and all whitespace dropped; trailing periods dropped; a leading `x=` (one letter, then
    `=`) dropped; case folded.
    """
    text = answer.strip().replace("\u2212", "-")  # a Unicode minus sign
    unit = _UNIT_AFTER_NUMBER.match(text)
    if unit:
        text = unit.group("value")
    for command in _UNWRAPPED:
        text = _unwrap(text, command)
    text = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", text)
    text = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", text)
    text = text.replace("\\%", "%").replace("\\$", "").replace("$", "")
    text = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", text)
    text = re.sub(r"\\[,;:! ]", "", text).replace("~", "")
    text = re.sub(r"\s+", "", text).rstrip(".")
    assignment = re.fullmatch(r"[A-Za-z]=(.+)", text)
    if assignment:
        text = assignment.group(1)
    return text.casefold()


_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRAC = re.compile(r"(?P<sign>[+-]?)\\frac(?:\{(?P<num>[^{}]+)\}|(?P<num1>\d))(?:\{(?P<den>[^{}]+)\}|(?P<den1>\d))")


def _plain_number(text: str) -> float | None:
    if _DECIMAL.fullmatch(text):
        return float(text)
    if _THOUSANDS.fullmatch(text):
        return float(text.replace(",", ""))
    return None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def numeric_values(normalized: str) -> list[float]:
    """The numbers a normalised answer can stand for; empty when it is not a number.

    A plain number (`-3`, `0.25`, `1,000`, `2.5e3`), a simple fraction (`3/4`, `\\frac{3}{4}`,
    `\\frac34`, `-\\frac{3}{4}`, with plain numbers above and below), or a percentage of one of
    these (`25%`), which stands for both 0.25 and 25 (answers_match compares two percentages by
    their numbers only).
    """
    text = normalized
    if text.endswith("%"):
        values = numeric_values(text[:-1])
        return [value for base in values for value in (base / 100, base)] if values else []
    value = _plain_number(text)
    if value is None and text.count("/") == 1:
        numerator, denominator = text.split("/")
        value = _ratio(_plain_number(numerator), _plain_number(denominator))
    if value is None:
        frac = _FRAC.fullmatch(text)
        if frac:
            value = _ratio(_plain_number(frac["num"] or frac["num1"]), _plain_number(frac["den"] or frac["den1"]))
            if value is not None and frac["sign"] == "-":
                value = -value
    return [value] if value is not None and math.isfinite(value) else []


def numbers_close(a: float, b: float, tolerance: float) -> bool:
    """|a - b| <= tolerance x max(1, |a|, |b|): relative for large numbers, absolute below 1."""
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def answers_match(expected: str, extracted: str | None, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether an extracted answer is the expected one: equal normalised text, or equal numbers."""
    if extracted is None:
        return False
    a, b = normalize_answer(expected), normalize_answer(extracted)
    if a == b:
        return a != ""
    if a.endswith("%") and b.endswith("%"):  # two percentages: their numbers (50% is not 0.5%)
        a, b = a[:-1], b[:-1]
    return any(numbers_close(x, y, tolerance) for x in numeric_values(a) for y in numeric_values(b))


# --- grading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grade:
    """One generation's outcome: the generations-table columns of OUTCOME_COLUMNS."""

    answer: str | None
    extracted_answer: str | None
    correct: bool | None
    opens_think: bool
    closes_think: bool
    has_boxed: bool


@dataclass(frozen=True)
class AnswerOptions:
    """How a prompt set's generations are graded: its extraction pattern (None: last \\boxed{}) and
    the numeric tolerance. `key` names the pattern's config key in errors."""

    pattern: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    key: str = "answers.patterns"

    def __post_init__(self) -> None:
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise ConfigError(f"answers.tolerance must be a finite number >= 0, got {self.tolerance!r}")
        if self.pattern is not None:
            compile_pattern(self.pattern, self.key)

    @property
    def compiled(self) -> re.Pattern[str] | None:
        return None if self.pattern is None else compile_pattern(self.pattern, self.key)

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> AnswerOptions:
        """From a gather job's params (answer_params); missing keys take the defaults."""
        params = params or {}
        return cls(params.get("pattern"), float(params.get("tolerance", DEFAULT_TOLERANCE)))


def format_facts(text: str) -> tuple[bool, bool, bool]:
    """(opens_think, closes_think, has_boxed): the text begins with `<think>` (after leading
    whitespace), contains `</think>`, contains a complete `\\boxed{...}`."""
    return text.lstrip().startswith(OPEN_THINK), CLOSE_THINK in text, bool(boxed_contents(text))


def grade(text: str, expected: str | None, options: AnswerOptions | None = None) -> Grade:
    """Grade one generation's text against its prompt's expected answer (None: no answer, correct None)."""
    options = options or AnswerOptions()
    extracted = extract_answer(text, options.compiled)
    correct = None if expected is None else answers_match(expected, extracted, options.tolerance)
    return Grade(expected, extracted, correct, *format_facts(text))


def grade_all(
    texts: Iterable[str], expected: Iterable[str | None], options: AnswerOptions | None = None
) -> dict[str, list[Any]]:
    """OUTCOME_COLUMNS of many generations, as lists (one compiled pattern for all)."""
    options = options or AnswerOptions()
    pattern = options.compiled
    columns: dict[str, list[Any]] = {name: [] for name in OUTCOME_COLUMNS}
    for text, answer in zip(texts, expected, strict=True):
        extracted = extract_answer(text, pattern)
        correct = None if answer is None else answers_match(answer, extracted, options.tolerance)
        facts = format_facts(text)
        for name, value in zip(OUTCOME_COLUMNS, (answer, extracted, correct, *facts), strict=True):
            columns[name].append(value)
    return columns


# --- config -------------------------------------------------------------------------------------


def check_answers_config(answers: Mapping[str, Any] | None, prompt_sets: Iterable[str]) -> None:
    """DAG time: every `answers.patterns` entry names a prompt set and compiles (one-line ConfigError)."""
    answers = answers or {}
    patterns = answers.get("patterns") or {}
    known = set(prompt_sets)
    for name, pattern in patterns.items():
        if name not in known:
            raise ConfigError(f"answers.patterns: unknown prompt set {name!r}; prompt sets: {sorted(known)}")
        compile_pattern(pattern, f"answers.patterns.{name}")
    AnswerOptions(tolerance=float(answers.get("tolerance", DEFAULT_TOLERANCE)))


def answers_sha256(answers: Mapping[str, str | None]) -> str | None:
    """Digest of a prompt set's expected answers (prompt id -> answer); None when it has none."""
    present = {prompt_id: answer for prompt_id, answer in answers.items() if answer is not None}
    if not present:
        return None
    return hashlib.sha256(json.dumps(present, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def answer_params(answers: Mapping[str, Any] | None, prompt_set: str, answers_digest: str | None) -> dict[str, Any]:
    """What grading a prompt set's generations depends on (the gather job's params): its pattern,
    and, when it has answers, their digest and the tolerance (which changes nothing without them)."""
    answers = answers or {}
    params: dict[str, Any] = {"pattern": (answers.get("patterns") or {}).get(prompt_set)}
    if answers_digest is not None:
        params["answers_sha256"] = answers_digest
        params["tolerance"] = float(answers.get("tolerance", DEFAULT_TOLERANCE))
    return params


# --- the gather: shards' generations graded into the per-set table --------------------------------


def gather_graded(
    inputs: Iterable[str | Path],
    output: str | Path,
    expected: Mapping[str, str | None],
    options: AnswerOptions | None = None,
    batch_rows: int = 4096,
) -> int:
    """Stream generations tables (the shards of a set, GENERATION_SCHEMA) into `output`, atomically,
    with OUTCOME_COLUMNS graded afresh: `expected` maps prompt id -> expected answer (None: none).

    A batch of at most `batch_rows` generations in memory at a time; each shard's schema must be the
    first's (a ResultFileError naming both files, as tokenscope.io.gather_parquet), and a shard
    without the outcome columns is a ResultFileError naming it. Returns the rows written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenscope.io import gather_parquet

    files = [str(path) for path in inputs]
    if not files:
        raise ValueError(f"no shard files to gather into {output}")
    schema = pq.read_schema(files[0])
    missing = [name for name in OUTCOME_COLUMNS if name not in schema.names]
    if missing:
        raise ResultFileError(f"{files[0]}: no column(s) {missing}; rerun its generate_shard job (delete the file)")
    grading = options or AnswerOptions()

    def graded(batch: pa.RecordBatch) -> pa.RecordBatch:
        answers = [expected.get(prompt_id) for prompt_id in batch.column("prompt_id").to_pylist()]
        outcomes = grade_all(batch.column("text").to_pylist(), answers, grading)
        columns = [
            pa.array(outcomes[field.name], type=field.type) if field.name in outcomes else batch.column(field.name)
            for field in schema
        ]
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    return gather_parquet(files, output, batch_rows, transform=graded)
