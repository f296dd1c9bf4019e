"""A small writer of protocol-buffer text format, for Triton's ``config.pbtxt`` (values as plain Python).

Messages are dicts (field -> value), repeated fields lists, enum values :class:`Enum` names, strings quoted,
numbers and booleans as they are. The tests parse the output with Triton's own ``model_config_pb2``.
"""

from __future__ import annotations

import json
from typing import Any


class Enum(str):
    """An enum value written bare (``TYPE_FP32``, ``KIND_GPU``)."""


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid text-format string literal (ASCII escapes)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} in protobuf text format")


def to_pbtxt(message: dict[str, Any], indent: int = 0) -> str:
    """``message`` in protobuf text format, one field a line."""
    pad = "  " * indent
    lines = []
    for field, value in message.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                lines.append(f"{pad}{field} {{\n{to_pbtxt(item, indent + 1)}{pad}}}\n")
            else:
                lines.append(f"{pad}{field}: {_scalar(item)}\n")
    return "".join(lines)
