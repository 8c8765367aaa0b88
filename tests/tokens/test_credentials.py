"""Token strings (rule 10): `<kind>_<43 base62 chars><6 char CRC-32>`, generated uniformly and
checked without touching the database."""

from __future__ import annotations

from collections import Counter

import pytest

from app import credentials
from app.credentials import SecretKind

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize("kind", list(SecretKind))
def test_generated_tokens_have_the_format_and_pass_the_check(kind: SecretKind) -> None:
    tokens = {credentials.generate(kind) for _ in range(500)}
    assert len(tokens) == 500
    for token in tokens:
        assert token.startswith(f"{kind.value}_") and len(token) == 4 + 43 + 6
        assert set(token[4:]) <= set(ALPHABET)
        assert credentials.kind_of(token) is kind


def test_body_characters_are_uniform_over_the_alphabet() -> None:
    """256 bits need every one of the 62 symbols equally likely at every position: 10,000
    bodies give ~6,935 of each; ±10% is more than eight standard deviations."""
    counts = Counter(ch for _ in range(10_000)
                     for ch in credentials.generate(SecretKind.access)[4:-6])
    expected = 10_000 * 43 / 62
    assert set(counts) == set(ALPHABET)
    assert all(abs(n - expected) < 0.1 * expected for n in counts.values()), counts
    firsts = Counter(credentials.generate(SecretKind.refresh)[4] for _ in range(6_200))
    assert set(firsts) == set(ALPHABET)  # no position is left with a narrower range


def signed(head: str) -> str:
    return head + credentials._checksum(head)


def test_malformed_tokens_are_refused() -> None:
    good = credentials.generate(SecretKind.personal)
    body, check = good[4:-6], good[-6:]
    flipped = ("1" if body[0] != "1" else "2") + body[1:]
    for bad in [
        good[:-1],  # truncated
        good + "a",  # too long
        f"tsx_{body}{check}",  # unknown kind
        f"tsp-{body}{check}",  # wrong separator
        f"tsp_{flipped}{check}",  # mistyped: the checksum no longer matches
        # Outside the alphabet, even with a checksum that matches:
        signed("tsp_é" + body[1:]),  # not ASCII
        signed("tsp_１" + body[1:]),  # a fullwidth digit is alphanumeric, but not ours
        signed("tsp_-" + body[1:]),
    ]:
        assert credentials.kind_of(bad) is None, bad
