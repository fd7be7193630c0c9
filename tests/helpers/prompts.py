"""Chat prompts with reference answers for the generation and scoring tests."""

from __future__ import annotations

from tokenscope.inputs.prompts import Prompt


def make_prompts(n: int = 4) -> list[Prompt]:
    questions = ["What is 2 + 2?", "Héllo wörld 日本語?", "Think step by step about f(x) = x^2 on [0, 2].", "Hi"]
    return [
        Prompt(
            id=f"p{i}",
            messages=(
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": questions[i % 4] * (1 + i)},
            ),
            reference=f"<think> {questions[i % 4]} </think> The answer is \\boxed{{{i}}}. 🙂",
        )
        for i in range(n)
    ]
