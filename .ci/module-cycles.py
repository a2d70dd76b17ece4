#!/usr/bin/env python3
"""Fails when a crate has an import cycle between its modules (docs/architecture.md).

For each crate under crates/ and the facade (src/), every `use` and every `crate::`/`super::`/
`self::` path in non-test code is resolved to the module it names. A reference from module M
to module T is an edge between the two children of their closest common ancestor that contain
M and T: a parent using its children, and a child using its parent, are a room and its parts,
not a cycle. Siblings at every level must then form a DAG: the script prints each cycle
(strongly connected component) with one reference per edge, and exits with 1.

Test code (`#[cfg(test)]` modules and files named tests.rs) is skipped: a test may use what
it likes. Usage: python3 .ci/module-cycles.py [--graph] [ROOT]
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """Blanks out comments, string and char literals (keeping newlines for line numbers)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 20]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # a char literal ('a', '\n', '\u{..}') or a lifetime ('a)
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_test_modules(text):
    """Removes `#[cfg(test)] mod NAME { … }` blocks and `#[cfg(test)] mod NAME;` lines."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*([{;])", text)
        if not m:
            return text
        if m.group(3) == ";":
            text = text[:m.start()] + text[m.end():]
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        text = text[:m.start()] + "\n" * text.count("\n", m.start(), j) + text[j:]


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` → [a::b, a::c::d, a::c::e] (globs dropped; aliases are removed before)."""
    tree = re.sub(r"\s+", "", tree)

    def parse(s, i, prefix):
        paths, cur = [], prefix
        start = i
        while i < len(s):
            c = s[i]
            if c == "{":
                head = s[start:i].rstrip(":")
                base = prefix + ([p for p in head.split("::") if p] if head else [])
                inner, i = parse(s, i + 1, base)
                paths.extend(inner)
                start = i
                continue
            if c in ",}":
                seg = s[start:i]
                if seg:
                    paths.append(prefix + [p for p in seg.split("::") if p])
                if c == "}":
                    return paths, i + 1
                start = i + 1
            i += 1
        seg = s[start:]
        if seg:
            paths.append(prefix + [p for p in seg.split("::") if p])
        return paths, i

    paths, _ = parse(tree, 0, [])
    return [[x for x in p if x != "*"] for p in paths]


def module_of(path, src):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def crate_graph(src):
    files = sorted(p for p in src.rglob("*.rs") if p.name != "tests.rs" and "tests" not in p.relative_to(src).parts[:-1])
    modules = {module_of(p, src): p for p in files}
    known = set(modules)
    edges = defaultdict(list)  # (level, a, b) -> [(file, line, text)]
    for mod, path in modules.items():
        text = strip_test_modules(strip_comments_and_strings(path.read_text()))
        refs = []
        for m in re.finditer(r"\buse\s+([^;]+);", text):
            line = text.count("\n", 0, m.start()) + 1
            body = re.sub(r"\s+as\s+" + IDENT, "", m.group(1))
            for p in expand_use_tree(body):
                refs.append((p, line))
        for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:crate|super|self)(?:::(?:super|" + IDENT + r"))+)", text):
            line = text.count("\n", 0, m.start()) + 1
            refs.append((m.group(1).split("::"), line))
        for p, line in refs:
            target = resolve(p, mod, known)
            if target is None:
                continue
            k = 0
            while k < min(len(mod), len(target)) and mod[k] == target[k]:
                k += 1
            if k == len(mod) or k == len(target):
                continue  # a parent and its part
            edges[(mod[:k], mod[k], target[k])].append((path, line, "::".join(p)))
    return edges


def resolve(p, mod, known):
    if not p:
        return None
    if p[0] == "crate":
        cur, rest = (), p[1:]
    elif p[0] in ("super", "self"):
        cur, rest = mod, p
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                cur = cur[:-1]
            rest = rest[1:]
    elif mod + (p[0],) in known:
        cur, rest = mod, p
    else:
        return None  # an external crate, std, or a name in scope
    target = cur
    for seg in rest:
        if target + (seg,) in known:
            target = target + (seg,)
        else:
            break
    return target


def sccs(nodes, adj):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    show_graph = "--graph" in sys.argv
    root = Path(args[0] if args else Path(__file__).resolve().parent.parent)
    crates = sorted((root / "crates").glob("*/src")) + [root / "src"]
    failed = False
    for src in crates:
        name = src.parent.name if src.parent != root else "annql (facade)"
        edges = crate_graph(src)
        levels = defaultdict(lambda: defaultdict(set))
        for (level, a, b) in edges:
            levels[level][a].add(b)
        for level, adj in sorted(levels.items()):
            nodes = set(adj) | {b for bs in adj.values() for b in bs}
            where = "::".join(("crate",) + level)
            if show_graph:
                for a in sorted(adj):
                    print(f"{name}: {where}: {a} -> {', '.join(sorted(adj[a]))}")
            for comp in sccs(nodes, adj):
                if len(comp) < 2:
                    continue
                failed = True
                members = set(comp)
                print(f"{name}: cycle among the modules of {where}: {', '.join(sorted(comp))}")
                for a in sorted(comp):
                    for b in sorted(adj[a] & members):
                        path, line, text = edges[(level, a, b)][0]
                        print(f"    {a} -> {b}: {path.relative_to(root)}:{line} ({text})")
    if failed:
        sys.exit(1)
    print(f"no import cycle between the modules of {len(crates)} crates")


if __name__ == "__main__":
    main()
