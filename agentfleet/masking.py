"""Masking secret values in anything agentfleet writes from an agent's output.

An agent (or ``setup``/``verify``) that prints its environment would otherwise put an
API key into logs, artifacts, events, results, the report and commit messages. The
values of variables whose *names* look secret are replaced by ``****`` wherever such
output is written. The environment is passed in by the edge; nothing here reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

MASK = "****"

# Names that look secret: *KEY*, *TOKEN*, *SECRET*, *PASSWORD* (any case).
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)

# Shorter values would mask ordinary words and digits all over the output ("1", "yes").
MIN_SECRET_LEN = 4


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret."""
    return bool(SECRET_NAME.search(name))


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values of ``env``'s secret-looking variables that are long enough to mask."""
    return sorted(
        {v for k, v in env.items() if looks_secret(k) and len(v.strip()) >= MIN_SECRET_LEN},
        key=len,
        reverse=True,  # longest first: a secret containing another is masked whole
    )


class Masker:
    """Replaces known secret values in text with ``****``; a no-op when there are none."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = sorted({v for v in values if len(v) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(re.escape(v) for v in self.values)) if self.values else None
        )

    @classmethod
    def from_env(cls, *envs: Mapping[str, str]) -> Masker:
        """A masker for the secret-looking variables of every mapping given."""
        return cls(v for env in envs for v in secret_values(env))

    def __call__(self, text: str) -> str:
        """``text`` with every secret value replaced by ``****``."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        return self._pattern is not None


NO_MASK = Masker()


M = TypeVar("M", bound=BaseModel)


def _masked(value: Any, mask: Masker) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v, mask) for k, v in value.items()}
    return value


def mask_model(model: M, mask: Masker, *, keep: Iterable[str] = ()) -> M:
    """A copy of ``model`` with every string masked, except its top-level fields ``keep``.

    For an attempt's result: what the agent printed or said is masked before the result
    is logged, published, persisted or reported; its patch (the files, as committed on
    the branch) is kept, or the result could not be restored from the cache.
    """
    if not mask:
        return model
    kept = set(keep)
    data = model.model_dump(mode="python")
    masked = {k: v if k in kept else _masked(v, mask) for k, v in data.items()}
    return type(model).model_validate(masked).model_copy(
        update={k: getattr(model, k) for k in kept}
    )
