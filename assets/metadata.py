"""Small helpers that turn domain results into Dagster metadata values, and read back what
earlier materializations and the checkout recorded (data versions, the git commit)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import dagster as dg


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> dg.MetadataValue:
    def cell(value: object) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def latest_data_version(context, asset) -> str:
    """The data version of `asset`'s latest materialization in this instance ("unknown" if none)."""
    record = context.instance.get_latest_materialization_event(asset.key)
    if record is None or record.asset_materialization is None:
        return "unknown"
    return record.asset_materialization.tags.get("dagster/data_version", "unknown")


def git_commit() -> str:
    """The commit of the code location's checkout, for lineage ("unknown" outside git)."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
