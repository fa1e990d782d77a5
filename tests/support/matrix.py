"""Which answer sets the template suite bakes.

- ``MATRIX``: every tenant_auth x tenant_isolation x llm_provider combination, with the
  other choice prompts cycled through so that every value of every choice is baked.
- ``pairwise_cover()``: the defaults plus a small set of rows in which every pair of values
  of any two choice prompts appears together; the generated suites run on these.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping

from support.baking import CHOICE_PROMPTS

Row = dict[str, str]

CORE = ("tenant_auth", "tenant_isolation", "llm_provider")


def full_matrix() -> list[Row]:
    others = [name for name in CHOICE_PROMPTS if name not in CORE]
    rows = []
    combos = itertools.product(*(CHOICE_PROMPTS[name] for name in CORE))
    for index, combo in enumerate(combos):
        row = dict(zip(CORE, combo, strict=True))
        for name in others:
            values = CHOICE_PROMPTS[name]
            row[name] = values[index % len(values)]
        rows.append(row)
    return rows


def pairs_of(row: Mapping[str, str]) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    items = sorted(row.items())
    return set(itertools.combinations(items, 2))


def all_pairs(prompts: Mapping[str, list[str]]) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    wanted = set()
    for a, b in itertools.combinations(sorted(prompts), 2):
        for va, vb in itertools.product(prompts[a], prompts[b]):
            wanted.add(((a, va), (b, vb)))
    return wanted


def uncovered(rows: Iterable[Mapping[str, str]], prompts: Mapping[str, list[str]]) -> set:
    missing = all_pairs(prompts)
    for row in rows:
        missing -= pairs_of(row)
    return missing


def greedy_cover(prompts: Mapping[str, list[str]], candidates: list[Row]) -> list[Row]:
    """Start from the defaults (first value of each prompt); add the most useful row."""
    rows = [{name: values[0] for name, values in prompts.items()}]
    missing = uncovered(rows, prompts)
    while missing:
        best = max(candidates, key=lambda row: len(pairs_of(row) & missing))
        rows.append(best)
        missing -= pairs_of(best)
    return rows


def pairwise_cover(prompts: Mapping[str, list[str]] = CHOICE_PROMPTS, tries: int = 40) -> list[Row]:
    """The smallest greedy pairwise cover over a few fixed candidate orders (deterministic).

    Each row costs one run of a generated test suite, so a shorter cover is worth a search.
    """
    names = sorted(prompts)
    candidates = [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(prompts[n] for n in names))
    ]
    best: list[Row] | None = None
    for seed in range(tries):
        random.Random(seed).shuffle(candidates)
        rows = greedy_cover(prompts, candidates)
        if best is None or len(rows) < len(best):
            best = rows
    assert best is not None
    return best


MATRIX = full_matrix()
COVER = pairwise_cover()


def row_id(row: Mapping[str, str]) -> str:
    return "-".join(row[name] for name in sorted(row))
