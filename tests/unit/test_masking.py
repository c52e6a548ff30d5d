"""Secret values are masked in agent output; ordinary text is left alone."""

from __future__ import annotations

from agentfleet.masking import MASK, NO_MASK, Masker, looks_secret, mask_model, secret_values


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


def test_a_result_is_masked_everywhere_but_its_patch() -> None:
    from agentfleet.codex.outcome import AttemptOutcome, CommandRun, Ending
    from agentfleet.results import AttemptResult, CheckResult, CommitPatch

    secret = "sk-live-0123456789"
    result = AttemptResult(
        task_id="t", attempt=1, branch="b", start_sha="0" * 40, succeeded=False,
        reason=f"agent failed_fatal: key={secret}",
        outcome=AttemptOutcome(
            ending=Ending.FAILED_FATAL, final_message=f"my key is {secret}",
            commands=[CommandRun(command=f"echo {secret}", exit_code=0, status="completed")],
            stderr_tail=f"OPENAI_API_KEY={secret}\n",
        ),
        verify=CheckResult(command="env", passed=False, exit_status=1,
                           output_tail=f"TOKEN={secret}"),
        patch=CommitPatch(diff=f"+{secret}\n", message="m"),
    )
    masked = mask_model(result, Masker.from_env({"OPENAI_API_KEY": secret}), keep=("patch",))

    assert secret not in masked.model_dump_json(exclude={"patch"})
    assert masked.reason == "agent failed_fatal: key=****"
    assert masked.outcome is not None and masked.outcome.commands[0].command == "echo ****"
    assert masked.patch == result.patch  # the files as committed: restorable
    assert secret in result.model_dump_json()  # the original is left as it was
    assert mask_model(result, NO_MASK) is result
