#!/usr/bin/env python3
"""The import graph of src/ between top-level modules (from `use crate::...` and `crate::x::`
paths), and every circle in it. The layers point down (the map in src/lib.rs): this exits 1 on
any circle between modules, or if a module other than `cli` and `demo` imports `startup`.
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

for m in mods:
    print(f"{m:12} -> {', '.join(sorted(edges[m])) or '(nothing)'}")
circles = [c for c in sccs if len(c) > 1]
print()
print("circles:", circles or "none")
importers = sorted(m for m in mods if "startup" in edges[m] and m not in ("cli", "demo"))
print("modules importing startup (besides cli and demo):", importers or "none")
sys.exit(1 if circles or importers else 0)
