"""The models a request may ask for (``LLM_MODELS``), each with its prices.

``LLM_MODELS=gpt-4o-mini,gpt-4o,my-finetune=0.30/1.20`` lists the models the API serves
besides ``LLM_MODEL`` (always served: the default of a request that names none, priced by
the ``LLM_*_PRICE_PER_MILLION_USD`` settings). A listed model is priced from the shipped
price table (``llm/prices.json``) unless the entry gives ``=INPUT/OUTPUT`` (US dollars per
million tokens); a model the table does not know and that has no prices is a start-up
error, so no request is ever priced by guesswork. Model names and prices are not secrets,
so messages quote them.

Each model is a Cycles scope level of its own (``workflow:<model key>``, see
``cycles/tenancy.py``), which is how a tenant's spend on one model can be capped: the
model key is the name lower-cased with every character a scope value cannot hold
(``:``, ``/``, ``@``, ``+``) turned into ``-``; two models with one key are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypedDict

from .config_values import ValueReader, quoted
from .llm import prices

SETTING = "LLM_MODELS"
# As the generation prompt allows a model name (hooks/pre_gen_project.py).
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")
MODEL_NAME_RULE = "1-128 letters, digits or . _ : / @ + -"
MODEL_ENTRY_FORM = "model or model=INPUT/OUTPUT (USD per million tokens) like my-model=0.30/1.20"
_NOT_IN_SCOPE = re.compile(r"[^a-z0-9._-]")
MAX_KEY_CHARS = 128  # a Cycles subject field's limit


class ModelFields(TypedDict):
    llm_models: Mapping[str, prices.ModelPrices]


def model_key(model: str) -> str:
    """``model`` as a Cycles scope value: lowercase, only ``[a-z0-9._-]``."""
    return _NOT_IN_SCOPE.sub("-", model.lower())[:MAX_KEY_CHARS]


def read_models(read: ValueReader, default: prices.ModelPrices) -> ModelFields:
    """Every model served, the default (``LLM_MODEL``, priced as ``default``) first."""
    served: dict[str, prices.ModelPrices] = {default.model: default}
    entries = [part.strip() for part in (read.raw(SETTING) or "").split(",")]
    for entry in filter(None, entries):
        name, sep, price_text = (part.strip() for part in entry.partition("="))
        if not MODEL_NAME_RE.fullmatch(name):
            read.note(SETTING, f"{SETTING}: {quoted(name)} is not a model name: {MODEL_NAME_RULE}")
            continue
        if name == default.model:
            if sep:
                read.note(
                    SETTING,
                    f"{SETTING}: {name} is LLM_MODEL, priced by the LLM_*_PRICE_PER_MILLION_USD "
                    "settings: list it without prices",
                )
            continue
        if name in served:
            read.note(SETTING, f"{SETTING}: {name} is listed twice")
            continue
        found = _priced(read, name, price_text if sep else None)
        if found is not None:
            served[name] = found
    _check_keys(read, served)
    return ModelFields(llm_models=served)


def _priced(read: ValueReader, name: str, price_text: str | None) -> prices.ModelPrices | None:
    explicit: dict[str, int] = {}
    if price_text is not None:
        input_text, slash, output_text = price_text.partition("/")
        try:
            if not slash:
                raise ValueError(f"expected {MODEL_ENTRY_FORM}")
            explicit = {
                "input": prices.usd_per_million(input_text),
                "output": prices.usd_per_million(output_text),
            }
        except ValueError as reason:
            read.note(SETTING, f"{SETTING}: the prices of {name} ({quoted(price_text)}): {reason}")
            return None
    if explicit:
        return prices.ModelPrices(
            name, explicit["input"], explicit["input"], explicit["output"], SETTING
        )
    listed = prices.listed(name)
    if listed is None:
        read.note(
            SETTING,
            f"{SETTING}: {name} has no price in this project's price table "
            f"(llm/{prices.TABLE_FILE}): give its prices as {name}=INPUT/OUTPUT "
            "(US dollars per million tokens)",
        )
    return listed


def _check_keys(read: ValueReader, served: Mapping[str, prices.ModelPrices]) -> None:
    """Two models with one scope key would share one per-model budget: refuse that."""
    seen: dict[str, str] = {}
    for name in served:
        other = seen.setdefault(model_key(name), name)
        if other != name:
            read.note(
                SETTING,
                f"{SETTING}: {other} and {name} would share the Cycles scope "
                f"workflow:{model_key(name)}: serve only one of them",
            )
