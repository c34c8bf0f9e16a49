#!/usr/bin/env python3
"""The import graph of src/ between top-level modules (from `use crate::...` and `crate::x::`
paths), and every circle in it. The layers point down (the map in src/lib.rs): this exits 1 on
any circle between modules, if a module other than `cli` and `demo` imports `startup`, or if
the built-in home hub (src/hubs/home/) reaches past the crate's public API: it may name what
src/lib.rs re-exports (`pub use`) and its documented public modules (`settings`, `protocol`),
never an internal module, as an application outside the crate could not.
`scripts/test.sh` runs it."""
import os, re, sys, itertools

ROOT = os.path.join(os.path.dirname(__file__), "..", "src")
mods = sorted(
    n[:-3] if n.endswith(".rs") else n
    for n in os.listdir(ROOT)
    if n not in ("lib.rs", "main.rs")
)
edges = {m: set() for m in mods}
for m in mods:
    path = os.path.join(ROOT, m)
    files = [path + ".rs"] if os.path.isfile(path + ".rs") else [
        os.path.join(dp, f) for dp, _, fs in os.walk(path) for f in fs if f.endswith(".rs")
    ]
    for f in files:
        text = open(f).read()
        # Test modules may reach anywhere; the layering is about the code that ships.
        text = text.split("#[cfg(test)]\nmod tests")[0]
        # Doc links name a module without depending on it.
        text = "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))
        for used in re.findall(r"crate::(\w+)", text):
            if used in edges and used != m:
                edges[m].add(used)
        for group in re.findall(r"use crate::\{([^}]*)\}", text):
            for used in re.findall(r"(?:^|,)\s*(\w+)", group):
                if used in edges and used != m:
                    edges[m].add(used)

# Strongly connected components (Tarjan).
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], itertools.count()
def visit(v):
    index[v] = low[v] = next(counter); stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(sorted(comp))
for v in mods:
    if v not in index:
        visit(v)

def shipped(path):
    """A file's code that ships: before its test module, without comments (doc links name an
    item without depending on it)."""
    text = open(path).read().split("#[cfg(test)]\nmod tests")[0]
    return "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))

# The public API: the crate root's re-exports and its public modules not hidden from the docs.
lib = open(os.path.join(ROOT, "lib.rs")).read()
public = set()
for used in re.findall(r"^pub use [^;]*;", lib, re.M):
    body = used[len("pub use "):-1]
    if "{" in body:
        public.update(re.findall(r"\w+", body[body.index("{"):]))
    else:
        public.add(body.split("::")[-1].split(" as ")[-1].strip())
# A public module is declared `pub mod x;` with no attribute: one behind `cfg` or `doc(hidden)`
# (the internals) is not the API.
lines = lib.split("\n")
for i, line in enumerate(lines):
    declared = re.match(r"pub mod (\w+);", line)
    if declared and not (i > 0 and lines[i - 1].lstrip().startswith("#[")):
        public.add(declared.group(1))
HOME = os.path.join(ROOT, "hubs", "home")
private_reach = []
for dp, _, fs in os.walk(HOME):
    for f in sorted(fs):
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dp, f)
        text = shipped(path)
        named = set(re.findall(r"crate::(\w+)", text))
        for group in re.findall(r"use crate::\{([^}]*)\}", text):
            named.update(re.findall(r"(?:^|,)\s*(\w+)", group))
        rel = os.path.relpath(path, ROOT)
        private_reach += [f"{rel}: crate::{n}" for n in sorted(named - public)]
        # `super` from the hub's root (or `super::super` below it) leaves the home hub.
        top = os.path.samefile(dp, HOME) and f == "mod.rs"
        if re.search(r"\bsuper::super\b", text) or (top and re.search(r"\bsuper::", text)):
            private_reach.append(f"{rel}: super:: outside src/hubs/home")

for m in mods:
    print(f"{m:12} -> {', '.join(sorted(edges[m])) or '(nothing)'}")
circles = [c for c in sccs if len(c) > 1]
print()
print("circles:", circles or "none")
importers = sorted(m for m in mods if "startup" in edges[m] and m not in ("cli", "demo"))
print("modules importing startup (besides cli and demo):", importers or "none")
print("home hub names beyond the public API:", private_reach or "none")
sys.exit(1 if circles or importers or private_reach else 0)
