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
# start-up but the run's own work. The second line is what each forked run still
# imported or built for itself on the way (sampled: about 50 ms of CPU a run).
PRELOAD = ("prefect.engine", "prefect.flow_engine", "flows.engine", "flows.attempt",
           "anyio._backends._asyncio", "prefect.task_engine", "prefect.utilities.visualization",
           "flows.engine:complete_models", "flows.shared_tls:warm_up")
# Prefect's client models left incomplete at import: each is built on its first use.
CLIENT_MODELS = ("prefect.client.schemas.actions", "prefect.client.schemas.objects",
                 "prefect.client.schemas.responses", "prefect._internal.observers")


def complete_models() -> None:
    """Build Prefect's incomplete client models now (a warm engine's preload): otherwise
    every forked run builds the ones it uses (a flow run's, a deployment's, ...) again."""
    import importlib

    import pydantic

    for name in CLIENT_MODELS:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, pydantic.BaseModel)
                    and value.__module__ == name and not value.__pydantic_complete__):
                value.model_rebuild()


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
