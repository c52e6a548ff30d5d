"""Secret values are masked in agent output; ordinary text is left alone."""

from __future__ import annotations

from agentfleet.masking import MASK, NO_MASK, Masker, looks_secret, secret_values


def test_names_that_look_secret() -> None:
    for name in ("OPENAI_API_KEY", "GH_TOKEN", "db_password", "CLIENT_SECRET", "apikey"):
        assert looks_secret(name), name
    for name in ("HOME", "PATH", "LANG", "TMPDIR"):
        assert not looks_secret(name), name


def test_values_of_secret_variables_are_masked_everywhere_in_the_text() -> None:
    mask = Masker.from_env({"OPENAI_API_KEY": "sk-abc123", "HOME": "/root"}, {"GH_TOKEN": "ghp_x9"})
    text = "key=sk-abc123 token ghp_x9 again sk-abc123 home /root"
    assert mask(text) == f"key={MASK} token {MASK} again {MASK} home /root"


def test_a_secret_containing_another_is_masked_whole() -> None:
    mask = Masker(["abcd", "abcdefgh"])
    assert mask("xabcdefghx abcd") == f"x{MASK}x {MASK}"


def test_short_values_and_no_secrets_change_nothing() -> None:
    assert secret_values({"A_KEY": "1", "B_TOKEN": "  "}) == []
    assert not Masker.from_env({"A_KEY": "yes"})
    assert NO_MASK("sk-abc123") == "sk-abc123"


def test_regex_characters_in_a_secret_are_literal() -> None:
    mask = Masker(["a.b*c+d"])
    assert mask("a.b*c+d axbbcd") == f"{MASK} axbbcd"
