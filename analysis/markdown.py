"""Markdown tables of study summaries (the generated sections of the docs pages)."""

from __future__ import annotations

__all__ = ["markdown_table"]


def markdown_table(header, rows) -> str:
    """A Markdown table: ``header`` (column titles) and ``rows`` (sequences of cells, already formatted; each is
    written with ``str``), one ``---`` separator per column, the text ending with a newline."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"
