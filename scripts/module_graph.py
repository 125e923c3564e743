#!/usr/bin/env python3
"""The module graph of each crate of the workspace, and its import cycles.

A module is a file under `crates/<crate>/src` (`foo.rs` and `foo/mod.rs` are
`foo`, `foo/bar.rs` is `foo::bar`). An edge `a -> b` is a reference from a file
of `a` to an item of `b`: `use crate::b::...`, `crate::b::f(...)` in code, a
`super::` path, or a name the crate root re-exports (`crate::Item`, resolved
through `lib.rs`'s `pub use`). Two levels are checked, because a folder module
is one component whose files share its types:

- between the top-level modules of a crate (a folder counts as one node);
- between the sibling files inside each folder (edges to and from the folder's
  own `mod.rs` are its parent's business, as `impl` blocks of the folder's type
  spread over its files).

Unit tests (`#[cfg(test)] mod tests` at the end of a file) are left out: a
test may use any module. Prints every cycle found (as the strongly connected components of each graph)
and exits 1 if there is one; `--dot` prints the top-level graphs in Graphviz
format instead.

    python3 scripts/module_graph.py            # check
    python3 scripts/module_graph.py --dot | dot -Tsvg > modules.svg
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules_of(src: Path) -> dict:
    """Module path (tuple) -> file, for every .rs file below `src`."""
    out = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts == ["lib"] or parts == ["main"]:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        out[tuple(parts)] = f
    return out


def strip_comments(text: str) -> str:
    # Unit tests (a file's `#[cfg(test)] mod tests`, at its end) may use anything.
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    # String literals can hold `crate::` in messages.
    text = re.sub(r'r#"(.*?)"#', '""', text, flags=re.S)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text, flags=re.S)
    return text


def expand_use_tree(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree] if tree else []
    head = tree[:brace]
    depth, parts, cur = 0, [], ""
    body = tree[brace + 1 : tree.rfind("}")]
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        for sub in expand_use_tree(p):
            out.append(head + sub if sub != "self" else head.rstrip(":"))
    return out


def paths_in(text: str) -> list:
    """Every `crate::`, `super::` and `self::` path the text names."""
    text = strip_comments(text)
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        found.extend(p for p in expand_use_tree(m.group(1)) if re.match(r"(crate|super|self)::", p))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    found.extend(m.group(0) for m in re.finditer(r"\b(?:crate|super)(?:::\w+)+", body))
    return found


def root_exports(lib: Path) -> dict:
    """Item name -> module path tuple, from the crate root's `pub use`."""
    out = {}
    text = strip_comments(lib.read_text())
    for m in re.finditer(r"\bpub\s+use\s+([^;]+);", text):
        for p in expand_use_tree(m.group(1)):
            segs = [s for s in p.split("::") if s]
            if segs and segs[0] == "crate":
                segs = segs[1:]
            if len(segs) >= 2:
                name = segs[-1].split(" as ")[-1]
                out[name] = tuple(segs[:-1])
    return out


def resolve(path: str, here: tuple, mods: dict, exports: dict):
    segs = path.split("::")
    if segs[0] == "crate":
        segs = segs[1:]
        base = ()
    else:
        base = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        base = tuple(base)
    full = base + tuple(segs)
    # The longest prefix that is a module.
    for n in range(len(full), -1, -1):
        if full[:n] in mods and n > 0:
            return full[:n]
    if segs and segs[0] in exports and not base:
        return exports[segs[0]]
    return base if base in mods and base else None


def sccs(nodes, edges):
    """Tarjan's strongly connected components with more than one node."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def name(m: tuple) -> str:
    return "::".join(m) or "(root)"


def crate_graph(src: Path):
    mods = modules_of(src)
    lib = src / "lib.rs" if (src / "lib.rs").exists() else src / "main.rs"
    exports = root_exports(lib)
    edges = {}  # module -> set(module), file-level
    for m, f in mods.items():
        if m == ():
            continue
        for p in paths_in(f.read_text()):
            t = resolve(p, m, mods, exports)
            if t is not None and t != m and t != ():
                edges.setdefault(m, set()).add(t)
    return mods, edges


def main():
    dot = "--dot" in sys.argv
    problems = []
    if dot:
        print("digraph modules {\n  rankdir=LR;")
    for src in sorted(ROOT.glob("crates/*/src")):
        crate = src.parent.name
        mods, edges = crate_graph(src)
        # Top level: a folder is one node.
        top_nodes = {m[:1] for m in mods if m}
        top = {}
        for a, bs in edges.items():
            for b in bs:
                if a[:1] != b[:1]:
                    top.setdefault(a[:1], set()).add(b[:1])
        if dot:
            for a in sorted(top):
                for b in sorted(top[a]):
                    print(f'  "{crate}/{name(a)}" -> "{crate}/{name(b)}";')
        for comp in sccs(top_nodes, top):
            problems.append(f"{crate}: cycle between modules {', '.join(map(name, comp))}")
        # Inside each folder: its files, without the folder's own mod.rs.
        folders = {m[:-1] for m in mods if len(m) > 1}
        for folder in sorted(folders):
            kids = {m for m in mods if len(m) > len(folder) and m[: len(folder)] == folder}
            level = len(folder) + 1
            inner = {}
            for a, bs in edges.items():
                if a not in kids:
                    continue
                for b in bs:
                    if b in kids and a[:level] != b[:level]:
                        inner.setdefault(a[:level], set()).add(b[:level])
            for comp in sccs({k[:level] for k in kids}, inner):
                problems.append(
                    f"{crate}: cycle inside {name(folder)}/ between {', '.join(map(name, comp))}"
                )
    if dot:
        print("}")
        return 0
    for p in problems:
        print(p)
    if problems:
        return 1
    print("no import cycles between modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
