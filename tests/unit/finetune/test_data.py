"""The reasoning data set of the finetune step (finetune.data): a function of the seed, varied,
every answer and every worked step correct, in the chat format with the math24 system prompt."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest

from tokenscope.finetune.data import GENERATORS, SYSTEM_PROMPT, generate_chats, generate_examples

from helpers.paths import REPO

RESPONSE = re.compile(
    r"<think>\n(?P<reasoning>.+)\n</think>\n(?P<conclusion>[^\n]+) The final answer is \\boxed\{(?P<boxed>[^{}]+)\}\.",
    re.DOTALL,
)
# An arithmetic expression right before "=" and the number right after it, e.g. "5 × -3 + 12 = -3".
EQUATION = re.compile(r"(?<![\w.])((?:-?\d+ [-+×÷] )+-?\d+) = (-?\d+)(?![\d.])")


def _integers(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"(?<![\w])-?\d+", text)]


def recompute_answer(kind: str, question: str) -> Fraction:
    """The answer worked out again from the question text alone."""
    n = _integers(question)
    if kind == "linear_equation":
        a, b, c = map(int, re.search(r"(\d+)x \+ (\d+) = (-?\d+)", question).groups())
        return Fraction(c - b, a)
    if kind == "subtraction":
        a, b = (n[1], n[0]) if " from " in question else (n[0], n[1])
        return Fraction(a - b)
    solvers = {
        "addition": lambda: n[0] + n[1],
        "multiplication": lambda: n[0] * n[1],
        "percentage": lambda: Fraction(n[0] * n[1], 100),
        "count_change": lambda: n[0] + n[1] - n[2],
        "shopping_change": lambda: n[2] - n[0] * n[1],
        "distance": lambda: n[0] * n[1],
        "speed": lambda: Fraction(n[0], n[1]),
        "sharing": lambda: Fraction(n[0], n[1]),
        "rectangle_area": lambda: n[0] * n[1],
        "rectangle_perimeter": lambda: 2 * (n[0] + n[1]),
        "average": lambda: Fraction(sum(n), len(n)),
        "discount": lambda: Fraction(n[0] * (100 - n[1]), 100),
    }
    return Fraction(solvers[kind]())


def evaluate(expression: str) -> Fraction:
    """Value of "a op b op c" with the usual precedence, in exact fractions."""
    tokens = expression.split(" ")
    terms: list[Fraction] = [Fraction(int(tokens[0]))]
    signs: list[int] = [1]
    for op, value in zip(tokens[1::2], tokens[2::2], strict=True):
        number = Fraction(int(value))
        if op == "×":
            terms[-1] *= number
        elif op == "÷":
            terms[-1] /= number
        else:
            terms.append(number)
            signs.append(1 if op == "+" else -1)
    return sum((s * t for s, t in zip(signs, terms, strict=True)), Fraction(0))


# ---------------------------------------------------------------------------- data set


def test_data_set_is_a_function_of_the_seed():
    assert generate_examples(50, seed=7) == generate_examples(50, seed=7)
    assert generate_chats(50, seed=7) == generate_chats(50, seed=7)
    assert generate_examples(50, seed=7) != generate_examples(50, seed=8)
    # A longer set starts with the shorter one: n only decides where the stream stops.
    assert generate_examples(80, seed=7)[:50] == generate_examples(50, seed=7)


def test_data_set_is_varied():
    examples = generate_examples(400, seed=0)
    kinds = {e.kind for e in examples}
    assert len(kinds) >= len(GENERATORS)  # every generator appears (two of them have two variants)
    assert len({e.question for e in examples}) > 390


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_every_answer_is_correct(seed):
    for example in generate_examples(300, seed):
        expected = recompute_answer(example.kind, example.question)
        assert expected.denominator == 1, example
        assert example.answer == str(expected.numerator), example
        equations = EQUATION.findall(example.reasoning)
        assert equations, example.reasoning
        for expression, result in equations:  # every worked step is right too
            assert evaluate(expression) == int(result), (expression, result, example.reasoning)


def test_chat_format():
    for example in generate_examples(200, seed=3):
        system, user, assistant = example.messages
        assert [system["role"], user["role"], assistant["role"]] == ["system", "user", "assistant"]
        assert system["content"] == SYSTEM_PROMPT
        assert user["content"] == example.question
        match = RESPONSE.fullmatch(assistant["content"])
        assert match, assistant["content"]
        assert match["boxed"] == example.answer
        assert assistant["content"].startswith("<think>\n") and assistant["content"].count("</think>") == 1
        assert assistant["content"].rstrip(".").endswith(f"\\boxed{{{example.answer}}}")
        assert "<think>" not in match["reasoning"] and "\\boxed" not in match["reasoning"]


def test_system_prompt_is_the_math24_one():
    math24 = REPO / "config" / "prompts" / "math24.jsonl"
    first = json.loads(math24.read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert "\\boxed{}" in SYSTEM_PROMPT and "\\\\" not in SYSTEM_PROMPT
