"""Reading one variable at a time: a fallback and a named, one-line problem for each bad value."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }}.config import APP_ENVS, LOG_FORMATS
from {{ cookiecutter.package_name }}.config_values import ValueReader, number_text, quoted


def reader(**env: str) -> ValueReader:
    return ValueReader(env)


def test_blank_is_unset() -> None:
    read = reader(A="  x  ", B="   ")
    assert (read.raw("A"), read.raw("B"), read.raw("C")) == ("x", None, None)


def test_problems_are_kept_in_order_and_their_variables_marked() -> None:
    read = reader(A="soon", B="lots", C="1")
    assert read.number("A", "1", 0, 10) == 1.0  # the default, so reading goes on
    assert read.integer("B", "2", 0, 10) == 2
    assert read.integer("C", "2", 0, 10) == 1
    assert read.problems == [
        "A='soon' is invalid: expected a number",
        "B='lots' is invalid: expected a whole number",
    ]
    assert not read.fine("A") and not read.fine("C", "B") and read.fine("C")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("11", "N=11.0 is out of range: expected 0.5..10"),
        ("nan", "N=nan is out of range: expected 0.5..10"),
        ("1" * 50, "N=1.1111111111111111e+49 is out of range: expected 0.5..10"),
    ],
)
def test_a_number_out_of_range_falls_back_to_the_default(text: str, problem: str) -> None:
    read = reader(N=text)
    assert read.number("N", "3", 0.5, 10) == 3.0
    assert read.problems == [problem]


def test_a_huge_whole_number_is_shown_cut_short() -> None:
    read = reader(N="9" * 1000)
    assert read.integer("N", "3", 0, 10) == 3
    (problem,) = read.problems
    assert problem == f"N={'9' * 36}... is out of range: expected 0..10"


def test_a_choice_is_case_insensitive_and_names_every_option_when_refused() -> None:
    read = reader(APP_ENV="Production", LOG_FORMAT="xml")
    assert read.choice("APP_ENV", "development", APP_ENVS) == "production"
    assert read.choice("LOG_FORMAT", "text", LOG_FORMATS) == "text"
    assert read.choice("UNSET", "json", LOG_FORMATS) == "json"
    assert read.problems == ["LOG_FORMAT='xml' is invalid: expected json or text"]
    read = reader(APP_ENV="staging")
    read.choice("APP_ENV", "development", APP_ENVS)
    assert read.problems == [
        "APP_ENV='staging' is invalid: expected development, testing or production"
    ]


def test_a_flag_refuses_anything_but_yes_and_no() -> None:
    read = reader(F="maybe")
    assert read.flag("F", True) is True
    assert read.problems == ["F='maybe' is invalid: expected true or false"]
    assert reader().flag("F", False) is False


def test_a_url_loses_its_trailing_slash_and_is_never_quoted() -> None:
    server = "https://cycles.example.com:7878"
    assert reader(U=f"{server}/").url("U") == server
    read = reader(U="https://user:secret@cycles.example.com")
    read.url("U")
    (problem,) = read.problems
    assert problem.startswith("U is not a valid URL: expected http(s)://")
    assert "secret" not in problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("acme", "entry 1 is not tenant=key"),
        ("acme=k1,=k2", "entry 2 is not tenant=key"),
        ("Acme=k1", "entry 1 does not start with a valid tenant id"),
        ("acme=k1,acme=k2", "entry 2 repeats the tenant of an earlier entry"),
        ("acme=bad", "entry 1 does not end with a key"),
    ],
)
def test_pairs_name_a_bad_entry_by_position_without_quoting_it(text: str, problem: str) -> None:
    read = reader(P=text)
    read.pairs("P", "key", lambda value: value.startswith("k"))
    (found,) = read.problems
    assert found.startswith(f"P: {problem}") and found.endswith("(value not shown)")


def test_pairs_skip_empty_entries_and_blanks() -> None:
    read = reader(P=" acme = k1 ,, globex=k2 ,")
    assert read.pairs("P", "key") == {"acme": "k1", "globex": "k2"}
    assert read.problems == []


def test_a_long_value_is_quoted_short_and_a_long_number_cut() -> None:
    assert quoted("x" * 10) == repr("x" * 10)
    assert quoted("x" * 100) == "'" + "x" * 55 + "...'"
    assert len(quoted("x" * 100)) == 60
    assert number_text(1.5) == "1.5"
    assert number_text(10**50) == str(10**50)[:36] + "..."
