"""Seeded generator of synthetic GSM8K-style math word problems.

Every problem is drawn from a ``random.Random(seed)``, so ``generate_problem(seed)`` is a pure function
of the seed. A problem has a question, a worked natural-language solution of 2 to 6 arithmetic steps
ending in ``#### <answer>``, the integer answer, and the raw quantities it was built from (so tests can
recompute the answer independently of the rendered text).

Why the solutions look the way they do:
* every step is rendered from one of several paraphrases, and steps that do not depend on each other
  (the cost of each item, the legs of each animal) come in a random order, so a global n-gram corpus
  cannot memorise one fixed template and sampled paths differ while sharing a lot of phrasing;
* every multiplication and division has a one-digit operand and results stay below 1000, so a ~4 M
  parameter model trained for under an hour can learn the arithmetic;
* steps restate their context, which keeps solutions in the 100-300 token range.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

PROMPT_SUFFIX = "\nAnswer:\n"
ANSWER_MARKER = "####"

NAMES = [
    "Tom", "Anna", "Ben", "Lucy", "Sam", "Maria", "Jack", "Emma", "Leo", "Nina", "Omar", "Grace",
    "Ivan", "Mia", "Noah", "Zoe", "Paul", "Sara", "Alex", "Ruth", "Kai", "Lena", "Hugo", "Ella",
]
PRONOUN = {name: ("she" if name in {"Anna", "Lucy", "Maria", "Emma", "Nina", "Grace", "Mia", "Zoe",
                                     "Sara", "Ruth", "Lena", "Ella"} else "he") for name in NAMES}
RELATIVES = ["friend", "cousin", "neighbor", "classmate", "teacher"]
# (singular, plural) of things people collect.
COLLECTIBLES = [
    ("marble", "marbles"), ("sticker", "stickers"), ("stamp", "stamps"), ("card", "cards"),
    ("shell", "shells"), ("book", "books"), ("coin", "coins"), ("apple", "apples"),
    ("cookie", "cookies"), ("pencil", "pencils"), ("toy car", "toy cars"), ("button", "buttons"),
    ("flower", "flowers"), ("candy", "candies"), ("ribbon", "ribbons"), ("balloon", "balloons"),
]
# (singular, plural) of things people buy in a shop.
SHOP_ITEMS = [
    ("notebook", "notebooks"), ("pen", "pens"), ("apple", "apples"), ("sandwich", "sandwiches"),
    ("toy", "toys"), ("book", "books"), ("cup", "cups"), ("shirt", "shirts"), ("ticket", "tickets"),
    ("plant", "plants"), ("candle", "candles"), ("box of tea", "boxes of tea"), ("ball", "balls"),
    ("pie", "pies"), ("bottle of juice", "bottles of juice"), ("bag of rice", "bags of rice"),
]
SHOPS = ["the store", "the market", "the mall", "a shop", "the fair", "the bakery"]
# (singular, plural, legs)
ANIMALS = [
    ("cow", "cows", 4), ("chicken", "chickens", 2), ("sheep", "sheep", 4), ("duck", "ducks", 2),
    ("horse", "horses", 4), ("goat", "goats", 4), ("goose", "geese", 2), ("pig", "pigs", 4),
    ("spider", "spiders", 8), ("beetle", "beetles", 6),
]
JOBS = ["at a cafe", "at a library", "at a farm", "in a shop", "as a tutor", "at a bakery", "at a garden"]


@dataclass(frozen=True)
class Problem:
    """One generated problem; ``quantities`` holds the raw numbers it was built from."""

    seed: int
    family: str
    question: str
    solution: str
    answer: int
    n_steps: int
    quantities: dict = field(default_factory=dict)


def format_prompt(question: str) -> str:
    """The exact prompt text the model was trained on (and the demo must send)."""
    return question + PROMPT_SUFFIX


def pick(rng: random.Random, options: list[str], **values: object) -> str:
    """Render one randomly chosen paraphrase."""
    return rng.choice(options).format(**values)


def capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def finish(rng: random.Random, steps: list[str], answer: int, goal: str, opening: str) -> str:
    """Join an opening, the steps and a closing line, then the ``#### <answer>`` line."""
    closing = pick(rng, [
        "So the answer is {a}.", "Therefore, {goal} is {a}.", "The final answer is {a}.",
        "So {goal} is {a}.", "That means {goal} is {a}.",
    ], a=answer, goal=goal)
    lines = ([opening] if opening else []) + [capitalize(s) for s in steps] + [closing]
    return "\n".join(lines) + f"\n{ANSWER_MARKER} {answer}"


def mul_text(rng: random.Random, a: int, b: int) -> str:
    return pick(rng, ["{a} * {b} = {c}", "{a} * {b} = {c}", "{a} x {b} = {c}", "{a} times {b} is {c}"],
                a=a, b=b, c=a * b)


def add_text(rng: random.Random, terms: list[int]) -> str:
    total = sum(terms)
    joined = " + ".join(str(t) for t in terms)
    if len(terms) == 2 and rng.random() < 0.25:
        return f"{terms[0]} plus {terms[1]} is {total}"
    return f"{joined} = {total}"


def sub_text(rng: random.Random, a: int, b: int) -> str:
    return pick(rng, ["{a} - {b} = {c}", "{a} - {b} = {c}", "{a} minus {b} is {c}"], a=a, b=b, c=a - b)


def div_text(rng: random.Random, a: int, b: int) -> str:
    return pick(rng, ["{a} / {b} = {c}", "{a} / {b} = {c}", "{a} divided by {b} is {c}"], a=a, b=b, c=a // b)


def opening_line(rng: random.Random, goal: str) -> str:
    return pick(rng, [
        "", "", "We need to find {goal}.", "Let's work it out step by step.",
        "We want {goal}.", "Let's find {goal} one step at a time.", "Let's solve it step by step.",
    ], goal=goal)


# ---------------------------------------------------------------- family: shopping


def shopping_problem(rng: random.Random, seed: int) -> Problem:
    """Several items at a unit price, maybe a coupon, maybe paying with a bill and asking for change."""
    name = rng.choice(NAMES)
    he = PRONOUN[name]
    n_items = rng.choice([1, 2, 2, 3, 3])
    items = rng.sample(SHOP_ITEMS, n_items)
    counts = [rng.randint(2, 9) for _ in items]
    prices = [rng.randint(2, 12) for _ in items]
    costs = [c * p for c, p in zip(counts, prices)]
    subtotal = sum(costs)
    use_coupon = rng.random() < 0.4 and subtotal > 12
    coupon = rng.randint(2, min(20, subtotal // 2)) if use_coupon else 0
    total = subtotal - coupon
    use_bill = rng.random() < 0.5 or (n_items == 1 and not use_coupon)
    bill = min(b for b in (20, 50, 100, 200, 500) if b > total) if use_bill else 0
    if use_bill and rng.random() < 0.3:
        bill = min(b for b in (50, 100, 200, 500, 1000) if b > bill)
    answer = bill - total if use_bill else total

    shop = rng.choice(SHOPS)
    item_phrases = [f"{c} {pl}" for c, (_, pl) in zip(counts, items)]
    bought = item_phrases[0] if n_items == 1 else ", ".join(item_phrases[:-1]) + " and " + item_phrases[-1]
    sentences = [pick(rng, ["{n} goes to {shop} and buys {b}.", "At {shop}, {n} buys {b}.",
                            "{n} buys {b} at {shop}."], n=name, shop=shop, b=bought)]
    for (sg, _), p in zip(items, prices):
        sentences.append(pick(rng, ["Each {sg} costs {p} dollars.", "One {sg} costs {p} dollars.",
                                    "A {sg} costs {p} dollars."], sg=sg, p=p))
    if use_coupon:
        sentences.append(pick(rng, ["{He} has a coupon for {d} dollars off the total.",
                                    "{He} uses a coupon that takes {d} dollars off."],
                              He=capitalize(he), d=coupon))
    if use_bill:
        sentences.append(pick(rng, ["{He} pays with a {b} dollar bill.", "{He} gives the cashier {b} dollars."],
                              He=capitalize(he), b=bill))
        goal = "the change"
        sentences.append(pick(rng, ["How much change does {n} get back?", "How many dollars of change does {n} get?"],
                              n=name))
    else:
        goal = "the total cost"
        sentences.append(pick(rng, ["How much does {n} pay in total?", "How many dollars does {n} spend?"], n=name))

    steps: list[str] = []
    order = list(range(n_items))
    rng.shuffle(order)  # independent steps: any order is a correct solution
    for i in order:
        sg, pl = items[i]
        steps.append(pick(rng, [
            "{c} {pl} at {p} dollars each cost {m} dollars.",
            "{n} pays {m} dollars for {c} {pl}.",
            "{n} buys {c} {pl} and each costs {p} dollars, so that is {m} dollars.",
            "for the {pl}, {n} pays {m} dollars.",
            "the cost of the {pl} is {m} dollars.",
        ], c=counts[i], pl=pl, p=prices[i], n=name, m=mul_text(rng, counts[i], prices[i])))
    if n_items >= 2:
        ordered_costs = [costs[i] for i in order]
        if n_items == 3 and not (use_coupon and use_bill) and rng.random() < 0.5:
            first = ordered_costs[0] + ordered_costs[1]
            steps.append(pick(rng, ["the first two items cost {s} dollars.", "together that is {s} dollars so far."],
                              s=add_text(rng, ordered_costs[:2])))
            steps.append(pick(rng, ["adding the last item gives {s} dollars.", "with the rest it costs {s} dollars."],
                              s=add_text(rng, [first, ordered_costs[2]])))
        else:
            steps.append(pick(rng, ["in total {n} spends {s} dollars.", "all together the items cost {s} dollars.",
                                    "the total is {s} dollars.", "adding it up, {n} pays {s} dollars."],
                              n=name, s=add_text(rng, ordered_costs)))
    if use_coupon:
        steps.append(pick(rng, ["the coupon takes off {d} dollars, so {n} pays {s} dollars.",
                                "after the coupon, the cost is {s} dollars.",
                                "with the {d} dollar coupon, {n} pays {s} dollars."],
                          d=coupon, n=name, s=sub_text(rng, subtotal, coupon)))
    if use_bill:
        steps.append(pick(rng, ["{n} pays with {b} dollars, so the change is {s} dollars.",
                                "the change is {s} dollars.",
                                "from the {b} dollars, {n} gets back {s} dollars."],
                          n=name, b=bill, s=sub_text(rng, bill, total)))
    solution = finish(rng, steps, answer, goal, opening_line(rng, goal))
    quantities = {"counts": counts, "prices": prices, "coupon": coupon, "bill": bill}
    return Problem(seed, "shopping", " ".join(sentences), solution, answer, len(steps), quantities)


# ---------------------------------------------------------------- family: collection


def collection_problem(rng: random.Random, seed: int) -> Problem:
    """A running count changed by a sequence of events (buy, give away, multiply, share equally)."""
    name = rng.choice(NAMES)
    he = PRONOUN[name]
    sg, pl = rng.choice(COLLECTIBLES)
    n_events = rng.randint(2, 6)
    start = rng.randint(6, 60)
    count = start
    ops: list[tuple[str, int]] = []
    for _ in range(n_events):
        op, arg = choose_event(rng, count)
        ops.append((op, arg))
        count = apply_event(count, op, arg)
    goal = pick(rng, ["the number of {pl} {n} has", "the number of {pl} at the end"], pl=pl, n=name)

    sentences = [pick(rng, ["{n} has {a} {pl}.", "{n} starts with {a} {pl}.", "{n} owns {a} {pl}."],
                      n=name, a=start, pl=pl)]
    steps: list[str] = [pick(rng, ["{n} starts with {a} {pl}.", "at first {n} has {a} {pl}.",
                                   "in the beginning there are {a} {pl}."], n=name, a=start, pl=pl)]
    count = start
    for index, (op, arg) in enumerate(ops):
        then = "" if index == 0 else rng.choice(["Then ", "After that, ", "Next, ", "Later, "])
        new = apply_event(count, op, arg)
        sentences.append(then + event_sentence(rng, op, arg, he if then else name, pl))
        steps.append(event_step(rng, op, arg, count, new, name, pl, index))
        count = new
    sentences.append(pick(rng, ["How many {pl} does {n} have now?", "How many {pl} does {n} have at the end?",
                                "How many {pl} does {n} end up with?"], pl=pl, n=name))
    question = " ".join(capitalize(s) for s in sentences)
    solution = finish(rng, steps, count, goal, opening_line(rng, goal))
    return Problem(seed, "collection", question, solution, count, len(ops),
                   {"start": start, "ops": [list(o) for o in ops]})


def choose_event(rng: random.Random, count: int) -> tuple[str, int]:
    """An event that keeps the count a positive integer below 1000."""
    options = ["add", "add"]
    if count > 4:
        options += ["sub", "sub"]
    if count <= 99:
        options.append("mul")
    divisors = [d for d in range(2, 6) if count % d == 0 and count // d >= 2]
    if divisors:
        options.append("div")
    op = rng.choice(options)
    if op == "add":
        return op, rng.randint(2, 40)
    if op == "sub":
        return op, rng.randint(2, count - 2)
    if op == "mul":
        return op, rng.randint(2, 5) if count <= 40 else rng.randint(2, 3)
    return op, rng.choice(divisors)


def apply_event(count: int, op: str, arg: int) -> int:
    return {"add": count + arg, "sub": count - arg, "mul": count * arg, "div": count // arg}[op]


def event_sentence(rng: random.Random, op: str, arg: int, who: str, pl: str) -> str:
    relative = rng.choice(RELATIVES)
    templates = {
        "add": ["{w} buys {k} more {pl}.", "{w} finds {k} more {pl}.", "{w} gets {k} {pl} from a {r}.",
                "{w} wins {k} more {pl}."],
        "sub": ["{w} gives {k} {pl} to a {r}.", "{w} loses {k} {pl}.", "{w} sells {k} {pl}.",
                "{w} gives away {k} {pl}."],
        "mul": ["{w} ends up with {k} times as many {pl} as before.", "the number of {pl} grows to {k} times as many.",
                "{w} now has {k} times as many {pl}."],
        "div": ["{w} divides the {pl} into {k} equal piles and keeps one pile.",
                "{w} splits the {pl} into {k} equal groups and keeps one group.",
                "{w} keeps only one of {k} equal parts of the {pl}."],
    }
    return pick(rng, templates[op], w=who, k=arg, k1=arg - 1, pl=pl, r=relative)


def event_step(rng: random.Random, op: str, arg: int, before: int, after: int, name: str, pl: str,
               index: int) -> str:
    lead = "" if index == 0 else rng.choice(["", "then ", "next, ", "after that, "])
    templates = {
        "add": ["{n} gets {k} more {pl}, so {n} has {e} {pl}.", "adding the {k} new {pl} gives {e} {pl}.",
                "{n} had {b} {pl} and gets {k} more, so now {n} has {e} {pl}.",
                "after getting {k} more {pl}, there are {e} {pl}."],
        "sub": ["{n} loses {k} {pl}, so {n} has {e} {pl} left.", "taking away {k} {pl} leaves {e} {pl}.",
                "{n} had {b} {pl} and {k} are gone, so now {n} has {e} {pl}.",
                "after giving {k} {pl} away, there are {e} {pl} left."],
        "mul": ["{k} times as many as {b} means {e} {pl}.", "{n} had {b} {pl}, and {k} times as many is {e} {pl}.",
                "the {pl} grow from {b} to {e} {pl}."],
        "div": ["one of {k} equal shares of {b} is {e} {pl}.", "{n} had {b} {pl} and keeps {e} {pl}.",
                "splitting {b} {pl} into {k} parts leaves {e} {pl} in each part."],
    }
    text = {
        "add": lambda: add_text(rng, [before, arg]),
        "sub": lambda: sub_text(rng, before, arg),
        "mul": lambda: mul_text(rng, before, arg),
        "div": lambda: div_text(rng, before, arg),
    }[op]()
    return lead + pick(rng, templates[op], n=name, k=arg, b=before, e=text, pl=pl)


# ---------------------------------------------------------------- family: work


def work_problem(rng: random.Random, seed: int) -> Problem:
    """Hours per day x days x hourly pay, then spending and a bonus; two valid multiplication orders."""
    name = rng.choice(NAMES)
    he = PRONOUN[name]
    hours, days, rate = rng.randint(2, 8), rng.randint(2, 6), rng.randint(3, 9)
    earned = hours * days * rate
    bonus = rng.choice([0, 0, rng.randint(5, 40)])
    spent = rng.choice([0, rng.randint(5, max(6, earned // 2))])
    answer = earned + bonus - spent
    job = rng.choice(JOBS)
    sentences = [
        pick(rng, ["{n} works {job} for {h} hours a day.", "{n} has a job {job} and works {h} hours each day."],
             n=name, job=job, h=hours),
        pick(rng, ["{He} works for {d} days.", "{He} works {d} days this week."], He=capitalize(he), d=days),
        pick(rng, ["{He} earns {r} dollars per hour.", "The pay is {r} dollars an hour."], He=capitalize(he), r=rate),
    ]
    if bonus:
        sentences.append(pick(rng, ["{He} also gets a bonus of {b} dollars.", "At the end {he} gets a {b} dollar bonus."],
                              He=capitalize(he), he=he, b=bonus))
    if spent:
        sentences.append(pick(rng, ["{He} spends {s} dollars on food.", "{He} spends {s} dollars on a gift."],
                              He=capitalize(he), s=spent))
        sentences.append(pick(rng, ["How many dollars does {n} have left?", "How much money does {n} have left?"], n=name))
        goal = "the money left"
    else:
        sentences.append(pick(rng, ["How much money does {n} earn in total?", "How many dollars does {n} make?"], n=name))
        goal = "the total money"

    facts = pick(rng, ["{n} works {h} hours a day for {d} days and earns {r} dollars per hour.",
                       "{n} earns {r} dollars an hour, works {h} hours a day, and works {d} days.", ""],
                 n=name, h=hours, d=days, r=rate)
    steps: list[str] = []
    if rng.random() < 0.5:
        steps.append(pick(rng, ["{n} works {m} hours in total.", "over {d} days that is {m} hours.",
                                "the total number of hours is {m}."], n=name, d=days, m=mul_text(rng, hours, days)))
        steps.append(pick(rng, ["{n} earns {m} dollars for those hours.", "at {r} dollars per hour, that is {m} dollars.",
                                "the pay is {m} dollars."], n=name, r=rate, m=mul_text(rng, hours * days, rate)))
    else:
        steps.append(pick(rng, ["in one day {n} earns {m} dollars.", "each day pays {m} dollars.",
                                "{n} makes {m} dollars per day."], n=name, m=mul_text(rng, hours, rate)))
        steps.append(pick(rng, ["over {d} days {n} earns {m} dollars.", "for {d} days that is {m} dollars.",
                                "the pay for all days is {m} dollars."], n=name, d=days, m=mul_text(rng, hours * rate, days)))
    running = earned
    extras = [("bonus", bonus)] if bonus else []
    extras += [("spent", spent)] if spent else []
    if len(extras) == 2 and rng.random() < 0.5:
        extras.reverse()  # bonus and spending commute
    for kind, value in extras:
        if kind == "bonus":
            steps.append(pick(rng, ["with the bonus, {n} has {s} dollars.", "adding the bonus gives {s} dollars."],
                              n=name, s=add_text(rng, [running, value])))
            running += value
        else:
            steps.append(pick(rng, ["after spending {v} dollars, {n} has {s} dollars.",
                                    "{n} spends {v} dollars, leaving {s} dollars."],
                              n=name, v=value, s=sub_text(rng, running, value)))
            running -= value
    solution = finish(rng, ([facts] if facts else []) + steps, answer, goal, opening_line(rng, goal))
    return Problem(seed, "work", " ".join(sentences), solution, answer, len(steps),
                   {"hours": hours, "days": days, "rate": rate, "bonus": bonus, "spent": spent})


# ---------------------------------------------------------------- family: farm legs


def farm_problem(rng: random.Random, seed: int) -> Problem:
    """Count the legs of 2 or 3 kinds of animals; the per-animal steps come in any order."""
    name = rng.choice(NAMES)
    kinds = rng.sample(ANIMALS, rng.choice([2, 2, 3]))
    counts = [rng.randint(2, 30) for _ in kinds]
    legs = [c * k[2] for c, k in zip(counts, kinds)]
    answer = sum(legs)
    listed = ", ".join(f"{c} {k[1]}" for c, k in zip(counts[:-1], kinds[:-1])) + f" and {counts[-1]} {kinds[-1][1]}"
    question = " ".join([
        pick(rng, ["{n} has a farm with {l}.", "On {n}'s farm there are {l}.", "{n} keeps {l}."], n=name, l=listed),
        pick(rng, ["How many legs do the animals have in total?", "How many legs are there on the farm?"]),
    ])
    goal = "the number of legs"
    order = list(range(len(kinds)))
    rng.shuffle(order)
    steps = []
    for i in order:
        sg, pl, k = kinds[i]
        steps.append(pick(rng, ["each {sg} has {k} legs, so {c} {pl} have {m} legs.",
                                "the {pl} have {m} legs.", "{c} {pl} with {k} legs each have {m} legs."],
                          sg=sg, pl=pl, k=k, c=counts[i], m=mul_text(rng, counts[i], k)))
    steps.append(pick(rng, ["in total there are {s} legs.", "all together the animals have {s} legs.",
                            "adding them up gives {s} legs."], s=add_text(rng, [legs[i] for i in order])))
    solution = finish(rng, steps, answer, goal, opening_line(rng, goal))
    return Problem(seed, "farm", question, solution, answer, len(steps),
                   {"counts": counts, "legs_per_animal": [k[2] for k in kinds]})


FAMILIES: list[tuple[str, Callable[[random.Random, int], Problem], float]] = [
    ("collection", collection_problem, 0.4),
    ("shopping", shopping_problem, 0.3),
    ("work", work_problem, 0.15),
    ("farm", farm_problem, 0.15),
]


def generate_problem(seed: int) -> Problem:
    """The problem for ``seed`` (deterministic)."""
    rng = random.Random(f"sgl-consensus-workload-{seed}")
    family = rng.choices([f[1] for f in FAMILIES], weights=[f[2] for f in FAMILIES])[0]
    return family(rng, seed)


def generate_problems(start_seed: int, count: int) -> list[Problem]:
    return [generate_problem(seed) for seed in range(start_seed, start_seed + count)]
