"""A reasoning-format data set generated from a seed: arithmetic and short word problems.

Every example is a chat in the format its system prompt (SYSTEM_PROMPT) asks for: the assistant
turn is worked reasoning between <think> and </think>, then a short sentence ending in \\boxed{ANSWER}.
Answers are computed, never written by hand, and the whole set is a pure function of (n, seed).
heldout_examples draws problems of the same families that no training set of seed 0 contains: the
default run's graded prompt set (config/prompts/reasoning_heldout.jsonl, heldout_prompt_set).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are a helpful assistant. Think step by step before responding to the user's query. "
    "Your thought process should be enclosed between <think> and </think> tags. Once your thought "
    "process is complete, write a response which should end in the final answer enclosed in \\boxed{}."
)

NAMES = ("Tom", "Anna", "Lena", "Omar", "Priya", "Carlos", "Mei", "Jonas", "Sara", "Kofi", "Ines", "Ravi")
PRONOUNS = {
    "Tom": "he",
    "Omar": "he",
    "Carlos": "he",
    "Jonas": "he",
    "Kofi": "he",
    "Ravi": "he",
    "Anna": "she",
    "Lena": "she",
    "Priya": "she",
    "Mei": "she",
    "Sara": "she",
    "Ines": "she",
}
COUNTABLE = ("apples", "marbles", "stickers", "pencils", "cookies", "books", "stamps", "shells")
SHOP_ITEMS = ("notebooks", "pens", "tickets", "mugs", "T-shirts", "plants", "comics")
SALE_ITEMS = ("jacket", "bicycle", "lamp", "backpack", "guitar", "chair", "watch")


@dataclass(frozen=True)
class ReasoningExample:
    """One generated problem: `kind` names its generator, `answer` is the text inside \\boxed{}."""

    kind: str
    question: str
    reasoning: str
    conclusion: str
    answer: str

    @property
    def response(self) -> str:
        """The assistant turn: <think> reasoning </think>, then the conclusion ending in \\boxed{}."""
        return f"<think>\n{self.reasoning}\n</think>\n{self.conclusion} The final answer is \\boxed{{{self.answer}}}."

    @property
    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": self.question},
            {"role": "assistant", "content": self.response},
        ]


def _split_add(a: int, b: int) -> list[str]:
    """a + b in two steps (tens of b first, then its ones), the way one adds mentally."""
    if b < 10 or b % 10 == 0:
        return [f"{a} + {b} = {a + b}"]
    round_part, ones = b - b % 10, b % 10
    return [f"{a} + {round_part} = {a + round_part}", f"{a + round_part} + {ones} = {a + b}"]


def _split_sub(a: int, b: int) -> list[str]:
    if b < 10 or b % 10 == 0:
        return [f"{a} - {b} = {a - b}"]
    round_part, ones = b - b % 10, b % 10
    return [f"{a} - {round_part} = {a - round_part}", f"{a - round_part} - {ones} = {a - b}"]


def _split_mul(a: int, b: int) -> list[str]:
    """a × b by distributing over the tens and ones of b."""
    if b < 10 or b % 10 == 0:
        return [f"{a} × {b} = {a * b}"]
    tens, ones = b - b % 10, b % 10
    return [
        f"Split {b} into {tens} + {ones}.",
        f"{a} × {tens} = {a * tens}",
        f"{a} × {ones} = {a * ones}",
        f"{a * tens} + {a * ones} = {a * b}",
    ]


def _addition(rng: random.Random) -> ReasoningExample:
    a, b = rng.randint(12, 899), rng.randint(11, 899)
    question = rng.choice(
        ("What is {a} + {b}?", "Calculate {a} + {b}.", "Find the sum of {a} and {b}.", "Compute $ {a} + {b} $.")
    )
    steps = [f"I need to add {a} and {b}.", *_split_add(a, b)]
    return ReasoningExample(
        "addition", question.format(a=a, b=b), "\n".join(steps), f"The sum of {a} and {b} is {a + b}.", str(a + b)
    )


def _subtraction(rng: random.Random) -> ReasoningExample:
    b = rng.randint(11, 499)
    a = b + rng.randint(5, 600)
    question = rng.choice(
        ("What is {a} - {b}?", "Calculate {a} - {b}.", "Subtract {b} from {a}.", "Compute $ {a} - {b} $.")
    )
    steps = [f"I need to subtract {b} from {a}.", *_split_sub(a, b)]
    return ReasoningExample(
        "subtraction", question.format(a=a, b=b), "\n".join(steps), f"The difference is {a - b}.", str(a - b)
    )


def _multiplication(rng: random.Random) -> ReasoningExample:
    a, b = rng.randint(11, 99), rng.randint(3, 49)
    question = rng.choice(
        (
            "What is {a} × {b}?",
            "Multiply {a} by {b}.",
            "Calculate the product of {a} and {b}.",
            "Compute $ {a} \\times {b} $.",
        )
    )
    steps = [f"I need to multiply {a} by {b}.", *_split_mul(a, b)]
    return ReasoningExample(
        "multiplication", question.format(a=a, b=b), "\n".join(steps), f"The product is {a * b}.", str(a * b)
    )


def _percentage(rng: random.Random) -> ReasoningExample:
    percent = rng.choice((5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80))
    # n is a multiple of 20, so every listed percentage of it is a whole number.
    n = 20 * rng.randint(2, 40)
    question = rng.choice(("What is {p}% of {n}?", "Calculate {p}% of {n}.", "Find {p} percent of {n}."))
    steps = [
        f"{percent}% means {percent} out of 100, so I multiply {n} by {percent} and divide by 100.",
        f"{n} × {percent} = {n * percent}",
        f"{n * percent} ÷ 100 = {n * percent // 100}",
    ]
    return ReasoningExample(
        "percentage",
        question.format(p=percent, n=n),
        "\n".join(steps),
        f"{percent}% of {n} is {n * percent // 100}.",
        str(n * percent // 100),
    )


def _count_change(rng: random.Random) -> ReasoningExample:
    name, friend = rng.sample(NAMES, 2)
    item = rng.choice(COUNTABLE)
    start, bought = rng.randint(3, 60), rng.randint(2, 40)
    given = rng.randint(1, start + bought - 1)
    pronoun = PRONOUNS[name]
    question = (
        f"{name} has {start} {item}. {pronoun.capitalize()} buys {bought} more and then gives {given} "
        f"to {friend}. How many {item} does {name} have now?"
    )
    total, left = start + bought, start + bought - given
    steps = [
        f"{name} starts with {start} {item}.",
        f"After buying {bought} more: {start} + {bought} = {total}",
        f"After giving {given} to {friend}: {total} - {given} = {left}",
    ]
    return ReasoningExample("count_change", question, "\n".join(steps), f"{name} has {left} {item} now.", str(left))


def _shopping_change(rng: random.Random) -> ReasoningExample:
    name = rng.choice(NAMES)
    item = rng.choice(SHOP_ITEMS)
    count, price = rng.randint(2, 9), rng.randint(2, 15)
    cost = count * price
    paid = next(bill for bill in (20, 50, 100, 200) if bill > cost)
    question = (
        f"{name} buys {count} {item} that cost ${price} each and pays with a ${paid} bill. "
        f"How much change, in dollars, does {PRONOUNS[name]} get back?"
    )
    steps = [
        f"The {item} cost {count} × {price} = {cost} dollars in total.",
        f"The change is {paid} - {cost} = {paid - cost}",
    ]
    return ReasoningExample(
        "shopping_change", question, "\n".join(steps), f"{name} gets {paid - cost} dollars back.", str(paid - cost)
    )


def _distance(rng: random.Random) -> ReasoningExample:
    vehicle, unit = rng.choice((("train", "km"), ("car", "miles"), ("bus", "km"), ("cyclist", "km")))
    speed, hours = rng.randint(3, 24) * 5, rng.randint(2, 9)
    distance = speed * hours
    per_hour = "km/h" if unit == "km" else "mph"
    if rng.random() < 0.5:
        question = f"A {vehicle} travels at {speed} {per_hour} for {hours} hours. How far does it travel, in {unit}?"
        steps = ["Distance equals speed times time.", f"{speed} × {hours} = {distance}"]
        return ReasoningExample(
            "distance", question, "\n".join(steps), f"The {vehicle} travels {distance} {unit}.", str(distance)
        )
    question = (
        f"A {vehicle} travels {distance} {unit} in {hours} hours at a constant speed. What is its speed in {per_hour}?"
    )
    steps = [
        "Speed equals distance divided by time.",
        f"{distance} ÷ {hours} = {speed}",
        f"Check: {speed} × {hours} = {distance}",
    ]
    return ReasoningExample("speed", question, "\n".join(steps), f"The speed is {speed} {per_hour}.", str(speed))


def _sharing(rng: random.Random) -> ReasoningExample:
    name = rng.choice(NAMES)
    item = rng.choice(COUNTABLE)
    people, each = rng.randint(2, 12), rng.randint(2, 25)
    total = people * each
    question = f"{name} shares {total} {item} equally among {people} friends. How many {item} does each friend get?"
    steps = [f"I divide {total} by {people}.", f"{total} ÷ {people} = {each}", f"Check: {people} × {each} = {total}"]
    return ReasoningExample("sharing", question, "\n".join(steps), f"Each friend gets {each} {item}.", str(each))


def _rectangle(rng: random.Random) -> ReasoningExample:
    length, width = rng.randint(4, 40), rng.randint(2, 30)
    if rng.random() < 0.5:
        question = f"A rectangle is {length} cm long and {width} cm wide. What is its area in square centimeters?"
        steps = ["The area of a rectangle is length times width.", *_split_mul(length, width)]
        return ReasoningExample(
            "rectangle_area",
            question,
            "\n".join(steps),
            f"The area is {length * width} square centimeters.",
            str(length * width),
        )
    question = f"A rectangle is {length} cm long and {width} cm wide. What is its perimeter in centimeters?"
    steps = [
        "The perimeter of a rectangle is 2 × (length + width).",
        f"{length} + {width} = {length + width}",
        f"2 × {length + width} = {2 * (length + width)}",
    ]
    return ReasoningExample(
        "rectangle_perimeter",
        question,
        "\n".join(steps),
        f"The perimeter is {2 * (length + width)} centimeters.",
        str(2 * (length + width)),
    )


def _average(rng: random.Random) -> ReasoningExample:
    count, mean = rng.randint(3, 5), rng.randint(10, 90)
    values = [mean + rng.randint(-9, 9) for _ in range(count - 1)]
    values.append(mean * count - sum(values))  # the last value makes the mean a whole number
    question = f"What is the average of {', '.join(map(str, values[:-1]))} and {values[-1]}?"
    partial, steps = values[0], [f"First I add the {count} numbers."]
    for value in values[1:]:
        steps.append(f"{partial} + {value} = {partial + value}")
        partial += value
    steps.append(f"Then I divide by {count}: {partial} ÷ {count} = {mean}")
    return ReasoningExample("average", question, "\n".join(steps), f"The average is {mean}.", str(mean))


def _linear_equation(rng: random.Random) -> ReasoningExample:
    a, x, b = rng.randint(2, 12), rng.randint(-10, 20), rng.randint(1, 50)
    c = a * x + b
    question = rng.choice(
        (
            "Solve for $x$: ${a}x + {b} = {c}$.",
            "What is the value of $x$ in the equation ${a}x + {b} = {c}$?",
            "Find $x$ if {a}x + {b} = {c}.",
        )
    )
    steps = [
        f"Subtract {b} from both sides: {a}x = {c} - {b} = {c - b}",
        f"Divide both sides by {a}: x = {c - b} ÷ {a} = {x}",
        f"Check: {a} × {x} + {b} = {c}",
    ]
    return ReasoningExample(
        "linear_equation", question.format(a=a, b=b, c=c), "\n".join(steps), f"The solution is x = {x}.", str(x)
    )


def _discount(rng: random.Random) -> ReasoningExample:
    item = rng.choice(SALE_ITEMS)
    percent = rng.choice((10, 20, 25, 30, 40, 50))
    price = 20 * rng.randint(2, 30)  # whole-dollar discounts for every listed percentage
    discount = price * percent // 100
    question = f"A {item} costs ${price}. It is on sale for {percent}% off. What is the sale price in dollars?"
    steps = [
        f"The discount is {percent}% of {price}.",
        f"{price} × {percent} = {price * percent}",
        f"{price * percent} ÷ 100 = {discount}",
        f"The sale price is {price} - {discount} = {price - discount}",
    ]
    return ReasoningExample(
        "discount",
        question,
        "\n".join(steps),
        f"The {item} costs {price - discount} dollars on sale.",
        str(price - discount),
    )


GENERATORS: dict[str, Callable[[random.Random], ReasoningExample]] = {
    "addition": _addition,
    "subtraction": _subtraction,
    "multiplication": _multiplication,
    "percentage": _percentage,
    "count_change": _count_change,
    "shopping_change": _shopping_change,
    "distance": _distance,
    "sharing": _sharing,
    "rectangle": _rectangle,
    "average": _average,
    "linear_equation": _linear_equation,
    "discount": _discount,
}


def generate_examples(n: int, seed: int) -> list[ReasoningExample]:
    """`n` problems drawn with random.Random(seed): the same (n, seed) always gives the same list."""
    rng = random.Random(seed)
    kinds = list(GENERATORS)
    return [GENERATORS[rng.choice(kinds)](rng) for _ in range(n)]


def generate_chats(n: int, seed: int) -> list[list[dict[str, str]]]:
    """The examples as chats: [system, user, assistant] messages each."""
    return [example.messages for example in generate_examples(n, seed)]


# --------------------------------------------------------------------------- held-out problems

HELDOUT_FILE = "config/prompts/reasoning_heldout.jsonl"
# The finetune's training sets are prefixes of one stream per seed (generate_examples(n, seed)[:m]
# == generate_examples(m, seed)), so excluding the first HELDOUT_EXCLUDE_N examples of a seed
# excludes the training set of every n_examples up to that many.
HELDOUT_EXCLUDE_N = 4096


def problem_key(example: ReasoningExample) -> tuple[str, tuple[int, ...]]:
    """A problem up to its wording: its family and the numbers of its question, sorted (so "Subtract
    5 from 9." and "What is 9 - 5?" are one problem; names and items do not count)."""
    return example.kind, tuple(sorted(int(value) for value in re.findall(r"(?<![\w])-?\d+", example.question)))


def heldout_examples(
    n: int = 16, *, seed: int = 0, exclude_seeds: tuple[int, ...] = (0,), exclude_n: int = HELDOUT_EXCLUDE_N
) -> list[ReasoningExample]:
    """`n` problems of the same families the finetune trains on, none of them in its training data.

    The families take turns in GENERATORS order (every family appears once in the first 12), each
    problem drawn from a stream of its own, random.Random(f"heldout-{seed}"), and redrawn while
    it is, up to its wording (problem_key), among the first `exclude_n` training examples of any
    of `exclude_seeds` (the training sets of every finetune with such a seed and n_examples <=
    exclude_n) or already taken. A pure function of its arguments.
    """
    excluded = {problem_key(example) for s in exclude_seeds for example in generate_examples(exclude_n, s)}
    rng = random.Random(f"heldout-{seed}")
    kinds = list(GENERATORS)
    examples: list[ReasoningExample] = []
    for i in range(n):
        while True:
            example = GENERATORS[kinds[i % len(kinds)]](rng)
            if problem_key(example) not in excluded:
                break
        excluded.add(problem_key(example))
        examples.append(example)
    return examples


def heldout_prompt_set(n: int = 16, *, seed: int = 0) -> str:
    """The JSONL text of the held-out prompt set (config/prompts/reasoning_heldout.jsonl): per line
    an id, the system and user messages of the training chats (no assistant turn), the `answer`
    and the problem's `kind` in `metadata`."""
    lines = []
    for i, example in enumerate(heldout_examples(n, seed=seed), start=1):
        record = {
            "id": f"h{i:02d}-{example.kind}",
            "messages": example.messages[:2],
            "answer": example.answer,
            "metadata": {"kind": example.kind},
        }
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines)


if __name__ == "__main__":  # python -m tokenscope.finetune.data: rewrite the held-out prompt set
    from pathlib import Path

    Path(HELDOUT_FILE).write_text(heldout_prompt_set(), encoding="utf-8")
