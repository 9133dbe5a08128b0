"""List the longest functions in a source tree (lines from `def` to the last line of the body).

Usage: python tools/longest_functions.py [ROOT=src/fortify] [N=15]
Nested functions count inside their parent and are also listed on their own.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def longest(root: Path, n: int) -> list[tuple[int, str]]:
    rows = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                rows.append((node.end_lineno - start + 1, f"{path}:{node.lineno} {node.name}"))
    return sorted(rows, key=lambda r: -r[0])[:n]


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "src/fortify")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    for lines, where in longest(root, n):
        print(f"{lines:5d}  {where}")


if __name__ == "__main__":
    main()
