"""Regenerate the Records section of docs/contracts.md from irv2_core/records.py.

Usage: python scripts/contracts.py [--check]  (--check exits 1 when the section is stale)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from irv2_core.contracts import contract_tables

DOC = Path(__file__).resolve().parent.parent / "docs" / "contracts.md"
BLOCK = re.compile(r"(<!-- records:begin -->\n).*?(<!-- records:end -->)", re.S)


def render(text: str) -> str:
    """*text* (the doc) with its generated block replaced by the current tables."""
    if not BLOCK.search(text):
        raise SystemExit(f"{DOC}: no <!-- records:begin --> ... <!-- records:end --> block")
    return BLOCK.sub(lambda m: m.group(1) + "\n" + contract_tables() + "\n" + m.group(2), text)


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in argv:
        if new != text:
            print(f"{DOC} is stale: run python scripts/contracts.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
