"""Text from git and from processes, made safe to write as JSON.

git gives file names as bytes; ``gitcmd.run_git`` decodes them with
``surrogateescape`` so that a name that is not UTF-8 round-trips. JSON cannot hold
those lone surrogates, so models that carry such text (file names, git's messages,
outputs) write each undecodable byte as ``\\xNN`` instead of failing the report.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SerializationInfo, SerializerFunctionWrapHandler, model_serializer


def printable(text: str) -> str:
    """``text`` with surrogate-escaped bytes as ``\\xNN`` (other lone surrogates as ``\\uNNNN``)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _printable_tree(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_printable_tree(k): _printable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_tree(v) for v in value]
    return value


class JsonSafeModel(BaseModel):
    """A model whose JSON never fails on text git or a process gave us (see ``printable``).

    Python-mode dumps (and pickled results) keep the exact text.
    """

    @model_serializer(mode="wrap")
    def _json_safe(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        return _printable_tree(data) if info.mode_is_json() else data
