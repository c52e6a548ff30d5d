"""``python -m flows.engine``: Prefect's engine for a deployment's flow run, forked from
the worker's warm engine when it can be, its heartbeat beaten by a thread that stops at
once.

The ``attempt`` deployment's command (``prefect.yaml``). Start-up: ``flows.warm`` has
the worker's warm engine, which imported Prefect and the attempt flow once, fork the
run; when it cannot, the run starts here, cold. Heartbeat: Prefect's sync engine joins
its heartbeat thread, which sleeps in one-second steps, when the flow returns: every
attempt's run ended up to a second after its result was in. Here ``prefect.engine`` runs
as its own ``__main__`` does, inside ``flows.heartbeat.beaten_here``: the same events at
the same interval, from the flow body (``flows.heartbeat.heartbeat``), nothing joined.
"""

from __future__ import annotations

import runpy
import sys
import warnings

# What a warm engine imports (and readies) before its first fork: all a flow run's
# start-up but the run's own work.
PRELOAD = ("prefect.engine", "prefect.flow_engine", "flows.engine", "flows.attempt",
           "flows.shared_tls:warm_up")


def run_engine() -> None:
    """Prefect's engine as ``python -m prefect.engine`` runs it, heartbeat beaten here."""
    from flows.heartbeat import beaten_here
    from flows.shared_tls import share

    share()  # its clients' TLS contexts: one, not nine
    with beaten_here(), warnings.catch_warnings():
        # Forked from a warm engine, prefect.engine is imported already: it runs as
        # __main__ all the same, which is what runpy warns about.
        warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules",
                                RuntimeWarning)
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    from flows.warm import run_warm

    code = run_warm("flows.engine:run_engine", PRELOAD)
    if code is not None:
        sys.exit(code)
    run_engine()
