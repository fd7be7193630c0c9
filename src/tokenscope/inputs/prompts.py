"""Prompt sets: JSONL files, one chat per line, validated with errors that name file and line."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tokenscope.errors import ConfigError, PromptSetError

VALID_ROLES = ("system", "user", "assistant", "tool")


InsertPlace = Literal["after_system", "before_question", "before_answer"]
INSERT_PLACES: tuple[str, ...] = ("after_system", "before_question", "before_answer")


@dataclass(frozen=True)
class Insertion:
    """Filler (or pause/marker) tokens inserted into every prompt of a derived prompt set.

    Exactly one of `text` (tokenized on its own, then repeated `count` times) or `token` (one
    vocabulary entry, repeated `count` times). The insertion happens on token ids after the chat
    template, so the tokens around it are unchanged and the span's positions are exact.
    """

    count: int
    place: InsertPlace = "before_question"
    text: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.token is None):
            raise ConfigError("insert: give exactly one of 'text' or 'token'")
        if self.count < 1:
            raise ConfigError("insert.count must be >= 1")
        if self.place not in INSERT_PLACES:
            raise ConfigError(f"insert.place must be one of {list(INSERT_PLACES)}, got {self.place!r}")

    @classmethod
    def from_config(cls, entry: dict[str, Any] | None) -> Insertion | None:
        return None if not entry else cls(**entry)


@dataclass(frozen=True)
class Prompt:
    """One chat of a prompt set.

    `messages` are the chat turns before the answer; `reference` is an optional assistant
    answer used for teacher-forced scoring; `answer` the optional expected final answer that
    generations are graded against (tokenscope.outcomes.answers; a number in the file is kept as
    its JSON text); `insertion` is the transform of a derived set.
    """

    id: str
    messages: tuple[dict[str, str], ...]
    reference: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    insertion: Insertion | None = None
    answer: str | None = None


PROMPT_KEYS = ("id", "messages", "reference", "answer", "metadata")


def _check_answer(record: dict[str, Any], line: str, where: str) -> str | None:
    """The prompt's `answer` as text: a string as given, a number as its JSON text (0.50 stays 0.50)."""
    answer = record.get("answer")
    if answer is None:
        return None
    prompt = f"prompt {str(record['id'])!r}"
    if isinstance(answer, str):
        if not answer.strip():
            raise PromptSetError(f"{where}: {prompt}: 'answer' must be a non-empty string or a number")
        return answer
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        shown = json.dumps(answer)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise PromptSetError(
            f"{where}: {prompt}: 'answer' must be a string or a number, got {type(answer).__name__} {shown}"
        )
    if isinstance(answer, float) and not math.isfinite(answer):
        raise PromptSetError(f"{where}: {prompt}: 'answer' must be a finite number, got {answer}")
    # The number as written in the file: parsed once more with numbers left as their text.
    return str(json.loads(line, parse_int=str, parse_float=str)["answer"])


def _check_id(record: dict[str, Any], where: str) -> str:
    if "id" not in record:
        raise PromptSetError(f"{where}: missing key 'id'")
    prompt_id = record["id"]
    if not isinstance(prompt_id, (str, int)) or isinstance(prompt_id, bool) or str(prompt_id) == "":
        raise PromptSetError(f"{where}: 'id' must be a non-empty string or integer")
    return str(prompt_id)


def _check_messages(record: dict[str, Any], where: str) -> tuple[dict[str, str], ...]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise PromptSetError(f"{where}: 'messages' must be a non-empty list of chat messages")
    checked: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise PromptSetError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in VALID_ROLES:
            raise PromptSetError(f"{where}: messages[{i}].role must be one of {list(VALID_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise PromptSetError(f"{where}: messages[{i}].content must be a string")
        checked.append({"role": role, "content": content})
    return tuple(checked)


def _check_record(record: Any, where: str, line: str = "") -> Prompt:
    if not isinstance(record, dict):
        raise PromptSetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = set(record) - set(PROMPT_KEYS)
    if unknown:
        raise PromptSetError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(PROMPT_KEYS)}")
    prompt_id = _check_id(record, where)
    messages = _check_messages(record, where)
    reference = record.get("reference")
    if reference is not None and (not isinstance(reference, str) or reference == ""):
        raise PromptSetError(f"{where}: 'reference' must be a non-empty string when given")
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise PromptSetError(f"{where}: 'metadata' must be an object")
    answer = _check_answer(record, line, where)
    return Prompt(id=prompt_id, messages=messages, reference=reference, metadata=metadata, answer=answer)


def prompt_lines(path: str | Path) -> Iterator[tuple[int, bytes, str]]:
    """(line number, raw bytes, text) of each non-blank line of a prompt set file: its prompts, in order.

    Bytes are split into lines as text mode would (\\n, \\r\\n, \\r), each decoded on its own so
    that a byte that is not UTF-8 is reported with its line; a leading byte-order mark is dropped.
    load_prompt_set and the generation shards (tokenscope.workflow.shards) both read lines here, so
    prompt i of a set is the same prompt for both.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptSetError(f"{path}: prompt set file not found")
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    for line_number, raw_line in enumerate(raw.splitlines(), start=1):
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PromptSetError(
                f"{path}, line {line_number}: not UTF-8 text (byte 0x{raw_line[error.start]:02x} at byte "
                f"{error.start + 1} of the line); save the file as UTF-8"
            ) from None
        if line.strip():
            yield line_number, raw_line, line


def has_references(prompts: Iterable[Prompt]) -> bool:
    """Whether any of `prompts` has a reference answer (for teacher forcing)."""
    return any(prompt.reference is not None for prompt in prompts)


def load_prompt_set(path: str | Path, insertion: dict[str, Any] | Insertion | None = None) -> list[Prompt]:
    """Read and validate a JSONL prompt set. Blank lines are skipped; ids must be unique.

    With `insertion`, every prompt carries that transform (a derived prompt set).
    """
    if isinstance(insertion, dict):
        insertion = Insertion.from_config(insertion)
    path = Path(path)
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for line_number, _, line in prompt_lines(path):
        where = f"{path}, line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptSetError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None
        prompt = _check_record(record, where, line)
        if prompt.id in seen:
            raise PromptSetError(f"{where}: duplicate id {prompt.id!r} (first on line {seen[prompt.id]})")
        seen[prompt.id] = line_number
        prompts.append(prompt)
    if not prompts:
        raise PromptSetError(f"{path}: prompt set is empty")
    return [replace(p, insertion=insertion) for p in prompts] if insertion else prompts


def resolve_prompt_sets(entries: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """Config `prompt_sets` -> name -> (JSONL file, insertion or None).

    An entry is a file path, or `{from: <other set>, insert: {...}}` for a derived set (one
    level: the source must be a file entry).
    """
    resolved: dict[str, tuple[str, dict[str, Any] | None]] = {}
    for name, entry in entries.items():
        if isinstance(entry, str):
            resolved[name] = (entry, None)
            continue
        source = entry.get("from")
        if source not in entries:
            raise PromptSetError(
                f"prompt_sets.{name}.from: unknown prompt set {source!r}; prompt sets: {sorted(entries)}"
            )
        if not isinstance(entries[source], str):
            raise PromptSetError(f"prompt_sets.{name}.from: {source!r} is itself derived; derive from a file entry")
        try:
            Insertion.from_config(entry["insert"])
        except (TypeError, ConfigError) as error:
            raise PromptSetError(f"prompt_sets.{name}.insert: {error}") from None
        resolved[name] = (entries[source], dict(entry["insert"]))
    return resolved
