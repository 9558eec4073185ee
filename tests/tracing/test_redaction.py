import random
from collections import Counter
from pathlib import Path

import pytest
import re2

from tracing.ingest.corpus import score
from tracing.ingest.redact import Redactor

CORPUS = Path(__file__).parent / "data" / "redaction_corpus.jsonl"


def test_it_finds_what_the_corpus_labels_and_little_else():
    result = score(Redactor(hash_key=b"k" * 32), CORPUS)
    print(f"recall {result.recall:.3f}, false positives {result.false_positive_rate:.3f}")
    for miss in result.misses:
        print("miss:", miss)
    assert result.recall >= 0.95
    assert result.false_positive_rate <= 0.05


def test_it_keeps_the_same_value_linkable_but_unreadable():
    redactor = Redactor(hash_key=b"a" * 32)
    counts = Counter()
    first = redactor.redact("mail jane@example.com", counts)
    again = redactor.redact("cc jane@example.com", counts)
    other = redactor.redact("mail john@example.com", counts)
    tag = first.split()[-1]
    assert tag.startswith("[EMAIL:") and len(tag) == len("[EMAIL:abcd]")
    assert again.endswith(tag) and not other.endswith(tag)
    # Another tenant's key gives another tag for the same address.
    assert not Redactor(hash_key=b"b" * 32).redact("jane@example.com", Counter()).endswith(tag)
    assert counts == {"EMAIL": 3}


def test_it_checks_numbers_before_calling_them_cards():
    counts = Counter()
    text = Redactor(hash_key=b"k" * 32).redact(
        "4111 1111 1111 1112 and 4111 1111 1111 1111", counts
    )
    assert text.startswith("4111 1111 1111 1112 and [CARD:")
    assert counts == {"CARD": 1}


def test_it_applies_a_tenants_own_patterns():
    redactor = Redactor(
        hash_key=b"k" * 32, custom_patterns=[{"name": "employee", "pattern": r"EMP-\d{6}"}]
    )
    counts = Counter()
    assert redactor.redact("badge EMP-004211", counts).startswith("badge [EMPLOYEE:")
    assert counts == {"EMPLOYEE": 1}


@pytest.mark.parametrize("secret", ["sk-ant-api03-" + "x" * 30, "postgres://u:pw12345@h/db"])
def test_it_never_lets_a_secret_through(secret):
    assert secret not in Redactor(hash_key=b"k" * 32).redact(f"value {secret} end", Counter())


def test_its_north_american_grouping_check_agrees_with_phonenumbers_matcher():
    """The redactor checks the grouping of North American numbers itself (the matcher
    costs five parses); on random groupings it must decide as the matcher does."""
    import random

    import phonenumbers

    from tracing.ingest.redact import _nanp_grouped

    rng = random.Random(3)
    compared = 0
    for _ in range(6000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.choice([10, 11, 12])))
        cuts = sorted(rng.sample(range(1, len(digits)), rng.randint(1, 4)))
        parts = [digits[a:b] for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
        value = rng.choice([" ", "-", "."]).join(parts)
        if rng.random() < 0.2:
            value = f"({parts[0]}) " + " ".join(parts[1:])
        if rng.random() < 0.15:
            value = "+" + value
        try:
            number = phonenumbers.parse(value, "US", keep_raw_input=True)
        except phonenumbers.NumberParseException:
            continue
        if number.country_code != 1 or not phonenumbers.is_valid_number(number):
            continue
        strict = phonenumbers.Leniency.STRICT_GROUPING
        matcher = phonenumbers.PhoneNumberMatcher(value, "US", leniency=strict)
        expected = any(m.start == 0 and m.end == len(value) for m in matcher)
        assert _nanp_grouped(value, number) == expected, value
        compared += 1
    assert compared > 500


def test_its_screen_misses_nothing_on_input_built_to_thrash_the_automaton():
    """Text whose every position starts a half-made card, phone, IBAN and key makes the
    set matcher throw its state cache away again and again; it must still report each
    detector that the search then finds, however long the text."""
    rng = random.Random(3)
    noise = "".join(rng.choice("0123456789 -./()+:ABCDEFabcdef@_") for _ in range(600_000))
    secrets = ["jane@example.com", "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE"]
    text = " ".join([noise, *(f"x {s} y" for s in secrets), noise])
    redactor = Redactor(hash_key=b"k" * 32)
    out = redactor.redact(text, Counter())
    for secret in secrets:
        assert secret not in out
    # The screen agrees with an unscreened search on every piece of the text.
    for start in range(0, len(text), 50_000):
        piece = text[start : start + 50_000]
        screened = bool(redactor.screen.Match(piece))
        assert screened == bool(redactor.regex.search(piece))


def test_it_still_redacts_when_its_screen_cannot_be_built(monkeypatch):
    """A tenant's patterns too large for the set matcher's memory leave every text
    searched, not every text passed through."""

    def refuse(self):
        raise re2.error("failed to compile Set")

    monkeypatch.setattr(re2.Set, "Compile", refuse)
    redactor = Redactor(hash_key=b"k" * 32)
    assert redactor.screen is None
    assert "jane@example.com" not in redactor.redact("mail jane@example.com", Counter())


def test_its_screen_is_built_for_the_builtin_and_a_tenants_patterns():
    redactor = Redactor(
        hash_key=b"k" * 32, custom_patterns=[{"name": "employee", "pattern": r"EMP-\d{6}"}]
    )
    assert redactor.screen is not None
    assert redactor.screen.Match("badge EMP-004211") == [0]
