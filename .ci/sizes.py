#!/usr/bin/env python3
"""Fails when a source file outside tests is over 800 lines or a function is over 150 lines.

Rooms stay small enough to read (STYLE.md): files under crates/*/src and src/, skipping test
files (tests.rs, tests/ folders, fuzz/); a function's length runs from its `fn` line to its
closing brace. A `#[cfg(test)]` module inside a file counts toward the file, not toward a
function. Usage: python3 .ci/sizes.py [ROOT]
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from importlib import import_module

# the same tokenizer as the import-cycle check: comments and literals blanked, lines kept
strip = import_module("module-cycles").strip_comments_and_strings

MAX_FILE = 800
MAX_FN = 150


def long_functions(text):
    text = strip(text)
    for m in re.finditer(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)", text):
        # the body starts at the first `{` after the signature (a `;` first: a declaration)
        i = m.end()
        depth_paren = 0
        while i < len(text):
            c = text[i]
            if c in "([":
                depth_paren += 1
            elif c in ")]":
                depth_paren -= 1
            elif c == ";" and depth_paren == 0:
                i = -1
                break
            elif c == "{" and depth_paren == 0:
                break
            i += 1
        if i < 0 or i >= len(text):
            continue
        depth, j = 0, i
        while j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        start = text.count("\n", 0, m.start()) + 1
        end = text.count("\n", 0, j) + 1
        if end - start + 1 > MAX_FN:
            yield m.group(1), start, end - start + 1


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    files = [p for src in list((root / "crates").glob("*/src")) + [root / "src"] for p in src.rglob("*.rs")]
    bad = []
    for p in sorted(files):
        rel = p.relative_to(root)
        if p.name == "tests.rs" or "tests" in rel.parts[:-1]:
            continue
        text = p.read_text()
        lines = text.count("\n")
        if lines > MAX_FILE:
            bad.append(f"{rel}: {lines} lines (over {MAX_FILE})")
        for name, line, n in long_functions(text):
            bad.append(f"{rel}:{line}: fn {name} is {n} lines (over {MAX_FN})")
    for b in bad:
        print(b)
    if bad:
        sys.exit(1)
    print(f"{len(files)} files: none over {MAX_FILE} lines, no function over {MAX_FN}")


if __name__ == "__main__":
    main()
