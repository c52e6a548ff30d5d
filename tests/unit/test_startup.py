"""Start-up imports: the collector off while they run, everything frozen after, as it was."""

from __future__ import annotations

import gc

import pytest

from agentfleet.startup import long_lived_imports


@pytest.fixture(autouse=True)
def restore_gc():
    was = gc.isenabled()
    yield
    gc.unfreeze()  # the test process's objects back in the collector's generations
    if was:
        gc.enable()


def test_the_collector_is_off_inside_then_on_with_what_was_made_frozen() -> None:
    gc.enable()
    with long_lived_imports():
        assert not gc.isenabled()
        kept = [[i] for i in range(1000)]  # what an import leaves behind
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)


def test_a_failing_import_still_gives_the_collector_back() -> None:
    gc.enable()
    with pytest.raises(ImportError), long_lived_imports():
        import agentfleet_no_such_module  # noqa: F401
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off() -> None:
    gc.disable()
    with long_lived_imports():
        pass
    assert not gc.isenabled()
