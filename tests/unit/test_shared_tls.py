"""flows.shared_tls: Prefect's API clients in one process share one verified TLS context."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import certifi

ROOT = Path(__file__).resolve().parents[2]

# In a process of its own: share() changes Prefect's modules for the whole process.
PROBE = """
import ssl, sys
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from flows.shared_tls import share

def context(client):
    pool = client._client._transport._pool
    return pool._ssl_context

before = [context(SyncPrefectClient("http://127.0.0.1:9/api")) for _ in range(2)]
shared = share()
after = [context(SyncPrefectClient("http://127.0.0.1:9/api")) for _ in range(2)]
after.append(context(PrefectClient("http://127.0.0.1:9/api")))
assert before[0] is not before[1], "without share(), a context per client"
assert len({id(c) for c in after}) == 1 and shared.built == 1, (shared.built, after)
assert after[0].verify_mode == ssl.CERT_REQUIRED and after[0].check_hostname
print("ok")
"""


def test_prefect_clients_share_one_verified_context() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_one_context_per_ca_file_and_a_replaced_file_is_read_again(tmp_path: Path) -> None:
    from flows.shared_tls import SharedContexts

    shared = SharedContexts()
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    first = shared.create_default_context(cafile=str(bundle))
    assert shared.create_default_context(cafile=str(bundle)) is first
    assert shared.create_default_context(cafile=certifi.where()) is not first
    bundle.write_bytes(bundle.read_bytes() + b"\n")  # replaced: another size
    assert shared.create_default_context(cafile=str(bundle)) is not first
    assert shared.built == 3


def test_contexts_without_a_ca_file_are_never_shared() -> None:
    # Prefect turns verification off on these (PREFECT_API_TLS_INSECURE_SKIP_VERIFY).
    from flows.shared_tls import SharedContexts

    shared = SharedContexts()
    insecure = shared.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    assert shared.create_default_context() is not insecure and shared.built == 0
    assert shared.SSLContext is ssl.SSLContext  # the rest is ssl's
