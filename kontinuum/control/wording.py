"""Counts in plain English, for logs, status and the command's output."""

from __future__ import annotations


def plural(count: int, singular: str, plural: str | None = None) -> str:
    """`1 error`, `2 errors`; `plural` for words that do not just take an s."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
