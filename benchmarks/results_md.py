"""Keeps benchmarks/RESULTS.md: one section per benchmark script, each replaced in place."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Measured results\n\nEach section is written by the benchmark script it names, "
    "with the command, date and machine of its last run. Rerun a script to refresh "
    "its section.\n"
)


def update_section(name: str, text: str, path: Path = RESULTS) -> Path:
    """Replace (or append) the section between the markers named ``name``."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    current = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(updated)
    return path
