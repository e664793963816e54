"""Copy the tables of `smoa report` into BENCHMARKS.md "Quality", so the figures there are computed.

    .venv/bin/smoa report bench/study/b && .venv/bin/smoa report bench/study/a
    python bench/study/splice.py            # rewrites BENCHMARKS.md in place; prints what it replaced

Each `### <heading>` subsection named in SECTIONS gets the tables of one store's report.md,
in order: the subsection's first table is replaced by the report's first table, and so on,
for as many tables as the subsection already has (the prose around them is left alone, to
be edited by hand). A subsection or report with fewer tables than expected is an error, so
a renamed heading cannot silently leave old numbers in place.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {  # heading in BENCHMARKS.md -> the store whose report.md fills it
    "### Mixture B (512 tokens)": ROOT / "bench/study/b/report.md",
    "### Mixture A (512 tokens)": ROOT / "bench/study/a/report.md",
    "### MATH-500 on mixture B (512 tokens)": ROOT / "bench/study/math_b/report.md",
}


def tables(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) line spans of the markdown tables in `lines` (end exclusive)."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|$", lines[i + 1]):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def splice(doc: list[str], heading: str, report: list[str]) -> list[str]:
    start = doc.index(heading)
    end = next((i for i in range(start + 1, len(doc)) if doc[i].startswith(("## ", "### "))), len(doc))
    section = doc[start:end]
    mine, theirs = tables(section), tables(report)
    if not mine:
        raise SystemExit(f"{heading}: no table to replace")
    if len(theirs) < len(mine):
        raise SystemExit(f"{heading}: the report has {len(theirs)} tables, the section {len(mine)}")
    for (a, b), (c, d) in reversed(list(zip(mine, theirs[:len(mine)], strict=True))):
        section[a:b] = report[c:d]
    print(f"{heading}: replaced {len(mine)} tables")
    return doc[:start] + section + doc[end:]


def main() -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text().splitlines()
    for heading, report in SECTIONS.items():
        doc = splice(doc, heading, report.read_text().splitlines())
    path.write_text("\n".join(doc) + "\n")


if __name__ == "__main__":
    sys.exit(main())
