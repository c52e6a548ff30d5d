"""``python -m flows.engine``: Prefect's engine for a deployment's flow run, its heartbeat
beaten by a thread that stops at once.

The ``attempt`` deployment's command (``prefect.yaml``). Prefect's sync engine joins its
heartbeat thread, which sleeps in one-second steps, when the flow returns: every
attempt's run ended up to a second after its result was in. Here ``prefect.engine`` runs
as its own ``__main__`` does, inside ``flows.heartbeat.beaten_here``: the same events at
the same interval, from the flow body (``flows.heartbeat.heartbeat``), nothing joined.
"""

from __future__ import annotations

import runpy

from flows.heartbeat import beaten_here

if __name__ == "__main__":
    with beaten_here():
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
