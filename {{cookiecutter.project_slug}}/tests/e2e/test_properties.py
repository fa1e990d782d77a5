"""Property-based requests: whatever a caller sends, the API answers in its own terms.

Random methods, paths (every route and some that do not exist), JSON bodies (any JSON
value, near-valid request bodies, bytes that are not JSON), content types, credentials
(valid, invalid and foreign, whichever way this project authenticates) and tenant ids go
to an app wired to a real local Cycles server. For every answer:

- never a 5xx (Cycles is up and both tenants have money, so nothing may fail);
- every 4xx is the app's JSON error with a string ``error`` and ``message``;
- a rejected request charges nothing and holds nothing: the ledger is unchanged;
- an accepted guarded call is settled at once, charging exactly what it reports.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from werkzeug.test import TestResponse

from conftest import (
    MAX_PROMPT_CHARS,
    MAX_TOKENS_LIMIT,
    TENANTS,
    Provisioner,
    auth_headers,
    caller_key,
)
from support.app_routes import api_of_a_test_app

# Every guarded route of the app, with the body model it takes: taken from the app itself,
# so a route added to it is driven here too.
REQUESTS: dict[str, type[BaseModel]] = {
    path: operation.request
    for path, operation in api_of_a_test_app().guarded.items()
    if operation.request is not None
}
GUARDED = tuple(sorted(REQUESTS))
ROUTES = ("/healthz", "/budget", *GUARDED)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
UNKNOWN_PATHS = ("/", "/chat/", "/CHAT", "/budget/acme", "/v1/reservations", "/healthz/x")

# Header values as HTTP carries them: printable ASCII, some Latin-1 (no CR/LF).
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
# Text with a lone surrogate in it: only a JSON escape such as \ud800 can carry one.
surrogate_text = st.builds(
    "{}{}{}".format, st.text(max_size=8), st.characters(categories=["Cs"]), st.text(max_size=8)
)
any_text = st.text(max_size=30) | surrogate_text
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=10,
)
tenant_ids = st.sampled_from((*TENANTS, "initech", "ACME", " acme", "acme/../globex")) | (
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
)
# Bodies a client might plausibly send to the guarded routes, valid or nearly so: any of
# their fields, with any value.
FIELDS = sorted({name for model in REQUESTS.values() for name in model.model_fields})
near_valid = st.fixed_dictionaries(
    {},
    optional={
        **{name: any_text | json_values for name in FIELDS},
        "max_tokens": st.integers(-2, MAX_TOKENS_LIMIT + 2) | json_values,
        "extra": json_values,
    },
)
long_texts = st.integers(MAX_PROMPT_CHARS - 2, MAX_PROMPT_CHARS + 2).map(lambda n: "x" * n)
long_prompts = long_texts.map(lambda text: {"prompt": text, "text": text})
# Bodies each guarded route accepts, give or take a bad value.
plain_prompts = st.text(min_size=1, max_size=60)
odd_prompts = surrogate_text | long_texts | st.sampled_from(["", "  \n\t "])
# Three in four prompts are plain text.
prompts = st.sampled_from([plain_prompts] * 3 + [odd_prompts]).flatmap(lambda s: s)


def field_values(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of a body field's type, around its limits (any JSON for other types)."""
    kinds = typing.get_args(annotation) or (annotation,)
    if str in kinds:
        return prompts
    if bool in kinds:
        return st.booleans()
    if int in kinds:
        return st.integers(-2, MAX_TOKENS_LIMIT + 2)
    return json_values


def body_of(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies of ``model``'s shape: its required fields, and some of its optional ones."""
    fields = model.model_fields
    return st.fixed_dictionaries(
        {name: field_values(f.annotation) for name, f in fields.items() if f.is_required()},
        optional={
            name: field_values(f.annotation) for name, f in fields.items() if not f.is_required()
        },
    )


route_bodies = {path: body_of(model) for path, model in REQUESTS.items()}
bodies = st.one_of(
    st.none(),  # no body at all
    st.one_of(near_valid, long_prompts, json_values, *route_bodies.values()).map(
        lambda value: json.dumps(value).encode()
    ),
    st.binary(max_size=40),  # mostly not JSON, sometimes not UTF-8
    st.sampled_from([b"{", b"[]", b"null", b'{"prompt": "hi"', b"\xef\xbb\xbf{}"]),
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/problem+json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ]
)


@st.composite
def credentials(draw: st.DrawFn) -> dict[str, str]:
    """Valid, invalid or foreign credentials, for either way of authenticating."""
    tenant = draw(tenant_ids)
    options: list[dict[str, str]] = [
        {},
        auth_headers(tenant) if tenant in TENANTS else {},
        {"Authorization": f"Bearer {caller_key(tenant)}"},
        {"Authorization": draw(header_text)},
        {"Authorization": "Bearer " + draw(header_text)},
        {"X-Tenant-ID": tenant},
        {"X-Tenant-ID": draw(header_text)},
    ]
    headers = draw(st.sampled_from(options))
    if draw(st.booleans()):  # sometimes a valid caller sends a second, conflicting identity
        headers = {**auth_headers(draw(st.sampled_from(TENANTS))), **headers}
    return headers


@st.composite
def requests(draw: st.DrawFn, paths: st.SearchStrategy[str]) -> dict[str, Any]:
    headers = draw(credentials())
    content_type = draw(content_types)
    if content_type is not None:
        headers["Content-Type"] = content_type
    if draw(st.booleans()):
        headers["Accept"] = draw(st.sampled_from(["text/html", "*/*", "application/xml"]))
    query = draw(st.none() | st.dictionaries(st.sampled_from(["tenant", "x"]), tenant_ids))
    return {
        "method": draw(st.sampled_from(METHODS)),
        "path": draw(paths),
        "headers": headers,
        "data": draw(bodies),
        "query_string": query,
    }


def balances(provisioner: Provisioner) -> dict[str, dict[str, Any]]:
    return {tenant: provisioner.balance(tenant) for tenant in TENANTS}


def check_answer(client: FlaskClient, provisioner: Provisioner, req: dict[str, Any]) -> None:
    before = balances(provisioner)
    response = client.open(
        req["path"],
        method=req["method"],
        headers=req["headers"],
        data=req["data"],
        query_string=req["query_string"],
    )
    response.get_data()  # a stream runs, and is charged, as it is read
    after = balances(provisioner)
    status = response.status_code
    assert status < 500, (status, response.get_data(as_text=True))
    if status >= 400 and req["method"] != "HEAD":
        assert response.mimetype == "application/json", response.get_data(as_text=True)
        body = response.get_json()
        assert isinstance(body, dict), body
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("message"), str) and body["message"], body
    if not 200 <= status < 300:
        assert after == before, "a rejected request changed the ledger"
        return
    # Accepted: nothing stays held, and the total charge is what the answer reports.
    assert all(balance["reserved"] == 0 for balance in after.values()), after
    charged = sum(after[t]["spent"] - before[t]["spent"] for t in TENANTS)
    assert charged == reported_cost(response), (charged, response.get_data(as_text=True))


def reported_cost(response: TestResponse) -> int:
    """What the answer says it cost: its JSON body's, or a stream's ``done`` event's."""
    if response.mimetype == "text/event-stream":
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.get_data(as_text=True).splitlines()
            if line.startswith("data: ")
        ]
        return sum(e["cost_usd_microcents"] for e in events if e["type"] == "done")
    body = response.get_json(silent=True)
    return body.get("cost_usd_microcents", 0) if isinstance(body, dict) else 0


@given(req=requests(st.sampled_from(ROUTES + UNKNOWN_PATHS)))
def test_any_request_gets_a_clean_answer_and_only_accepted_calls_are_charged(
    client: FlaskClient, provisioner: Provisioner, req: dict[str, Any]
) -> None:
    check_answer(client, provisioner, req)


@pytest.mark.parametrize("route", GUARDED)
@settings(max_examples=max(10, settings.default.max_examples // len(GUARDED)))
@given(data=st.data(), tenant=st.sampled_from(TENANTS))
def test_guarded_calls_by_known_callers_charge_exactly_or_nothing(
    client: FlaskClient, provisioner: Provisioner, data: st.DataObject, tenant: str, route: str
) -> None:
    """Known callers POSTing JSON to each guarded route (one test per route the app has):
    most reach Cycles and get charged."""
    mostly_valid = data.draw(st.sampled_from([True, True, True, False]), label="mostly valid")
    body = data.draw(route_bodies[route] if mostly_valid else near_valid, label="body")
    req = {
        "method": "POST",
        "path": route,
        "headers": {**auth_headers(tenant), "Content-Type": "application/json"},
        "data": json.dumps(body).encode(),
        "query_string": None,
    }
    check_answer(client, provisioner, req)
