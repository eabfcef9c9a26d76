"""console.names writes any PN value with its family name first and marked (followed by a comma when any other
name follows), never with a PN delimiter left in, whatever the components hold (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radtrace.console.names import NO_FAMILY_NAME, NO_NAME, person_name

pytestmark = pytest.mark.unit

#: a component as a PN value may carry it: no delimiter, no backslash; spaces inside a component are kept
_COMPONENT = st.text(st.characters(blacklist_characters="^=\\\r\n", blacklist_categories=("Cs", "Cc")), max_size=12)


@given(st.lists(_COMPONENT, min_size=1, max_size=5), st.lists(st.lists(_COMPONENT, max_size=5), max_size=2))
def test_the_family_name_comes_first_and_is_marked(first: list[str], others: list[list[str]]) -> None:
    value = "=".join("^".join(group) for group in [first, *others])
    shown = person_name(value)
    assert "^" not in shown
    assert "=" not in shown
    family, *rest = [part.strip() for part in first] + [""] * 4
    if not any(part.strip() for group in [first, *others] for part in group):
        assert shown == NO_NAME
        return
    if not any(part.strip() for part in first):
        return  # the first group names nobody: the next group is written first (checked below for named groups)
    forenames = [rest[2], rest[0], rest[1]]  # prefix, given, middle
    start = family or NO_FAMILY_NAME
    assert shown.startswith(start)
    if any(forenames):
        assert shown.startswith(f"{start}, {' '.join(part for part in forenames if part)}")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("DOE^JOHN", "DOE, JOHN"),
        ("DOE", "DOE"),
        ("^Jörg", "(no family name), Jörg"),
        ("Doe^John^^Dr=ドウ^ジョン", "Doe, Dr John (ドウ, ジョン)"),
        ("DOE^^^^Jr", "DOE Jr"),
        ("Doe^John^A^^III", "Doe, John A, III"),
        ("^^^^", NO_NAME),
        (None, NO_NAME),
        ("=ドウ^ジョン", "ドウ, ジョン"),
        ("Doe^John=ドウ^ジョン=どう^じょん", "Doe, John (ドウ, ジョン · どう, じょん)"),
    ],
)
def test_examples(value: str | None, shown: str) -> None:
    assert person_name(value) == shown
