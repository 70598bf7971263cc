"""Markdown tables, for the decision report and the Dagster metadata alike."""


def md_table(header: list[str], rows: list[list]) -> str:
    """A pipe table; ``|`` in a cell is escaped and a line break becomes a space, so any value stays in its cell."""
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)
