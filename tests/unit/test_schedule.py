from agentfleet.schedule import Scheduler, TaskState


def drain(s: Scheduler, outcomes: dict[str, bool]) -> list[list[str]]:
    """Run the scheduler to the end, finishing each batch at once; return the batches."""
    batches = []
    while not s.done:
        ready = s.take_ready()
        batches.append(ready)
        for t in ready:
            s.finish(t, outcomes.get(t, True))
    return batches


def test_independent_tasks_start_together_up_to_the_cap():
    s = Scheduler(["a", "b", "c"], {}, {}, concurrency=2)
    assert s.take_ready() == ["a", "b"]
    assert s.take_ready() == []
    s.finish("a", True)
    assert s.take_ready() == ["c"]


def test_a_task_starts_as_soon_as_what_it_waits_for_is_done_not_by_waves():
    # c waits only for a; b is slow. c must start when a ends, before b ends.
    s = Scheduler(["a", "b", "c"], {"c": ["a"]}, {"c": ["a"]}, concurrency=4)
    assert s.take_ready() == ["a", "b"]
    s.finish("a", True)
    assert s.take_ready() == ["c"]
    assert s.state["b"] is TaskState.RUNNING


def test_failed_dependency_blocks_transitively_but_overlap_waiters_still_run():
    order = ["db", "api", "tests", "docs"]
    waits = {"api": ["db"], "tests": ["api"], "docs": ["db"]}
    deps = {"api": ["db"], "tests": ["api"]}  # docs waits on db only for overlapping paths
    s = Scheduler(order, waits, deps, concurrency=4)
    assert s.take_ready() == ["db"]
    assert s.finish("db", False) == ["api", "tests"]
    assert s.blocked_by == {"api": ["db"], "tests": ["db"]}
    assert s.take_ready() == ["docs"]
    s.finish("docs", True)
    assert s.done


def test_done_before_counts_as_finished():
    s = Scheduler(["a", "b"], {"b": ["a"]}, {"b": ["a"]}, concurrency=1)
    s.mark_done_before("a")
    assert s.take_ready() == ["b"]


def test_stop_hands_out_nothing_more_and_waits_for_running():
    s = Scheduler(["a", "b"], {}, {}, concurrency=1)
    assert s.take_ready() == ["a"]
    s.stop()
    assert not s.done
    s.finish("a", True)
    assert s.take_ready() == []
    assert s.done and s.state["b"] is TaskState.PENDING


def test_diamond_drains_in_dependency_order():
    order = ["a", "b", "c", "d"]
    waits = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert drain(Scheduler(order, waits, waits, 4), {}) == [["a"], ["b", "c"], ["d"]]


def test_a_task_blocked_by_two_failures_names_both_in_apply_order_whichever_failed_first():
    order = ["a", "b", "c", "d"]
    deps = {"c": ["a", "b"], "d": ["c"]}
    for first, second in (("a", "b"), ("b", "a")):
        s = Scheduler(order, deps, deps, concurrency=4)
        assert s.take_ready() == ["a", "b"]
        assert s.finish(first, False) == ["c", "d"]
        assert s.finish(second, False) == []  # already blocked: nothing new, but named
        assert s.blocked_by == {"c": ["a", "b"], "d": ["a", "b"]}
        assert s.done
