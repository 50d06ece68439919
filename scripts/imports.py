#!/usr/bin/env python3
"""Run: python3 scripts/imports.py. The import graph of cache-core's top-level modules, from `use crate::…` lines and
`crate::…` paths in code (comments and test modules do not count): prints each module's imports, the circles, and the
edges that point up the layering below (a module may import only modules listed after it). Exits 1 on a circle, an
upward edge or a module missing from the layering; CI runs it."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else "cache-core/src"
def module_of(path):
    rel = os.path.relpath(path, root)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts) or "lib"
modules = {}
for dirpath, _, files in os.walk(root):
    for name in files:
        if name.endswith(".rs"):
            path = os.path.join(dirpath, name)
            modules[module_of(path)] = open(path).read()
top = {m.split("::")[0] for m in modules}
graph = {}
for module, text in modules.items():
    # test modules do not count
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    # comment lines (doc links included) are not imports; a `//` inside a line may be a URL
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    src = module.split("::")[0]
    deps = set()
    for match in re.finditer(r"crate::([a-z_]+)", text):
        dep = match.group(1)
        if dep in top and dep != src:
            deps.add(dep)
    graph.setdefault(src, set()).update(deps)
for module in sorted(graph):
    print(f"{module}: {', '.join(sorted(graph[module]))}")
# circles (strongly connected components)
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
    for w in graph.get(v, ()):
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in list(graph):
    if v not in index: strong(v)
print("circles:", sccs if sccs else "none")
edges = sum(len(d) for d in graph.values())
print("edges:", edges)

# The layering, top first: what the user and the macros call, the handle, the engine and what it
# runs on, then the leaves. A module imports only modules below it.
LAYERS = [
    "lib", "private", "response", "after_write", "read_many", "read_through", "function", "adapt",
    "builder", "cache", "connect", "engine", "near", "store", "guard", "flight", "metrics",
    "stats", "codec", "key", "source", "redact", "time", "locks", "error",
]
rank = {module: i for i, module in enumerate(LAYERS)}
unplaced = sorted(set(graph) - set(rank))
upward = [(src, dep) for src, deps in sorted(graph.items()) for dep in sorted(deps)
          if src in rank and dep in rank and rank[dep] <= rank[src]]
print("not in the layering:", unplaced if unplaced else "none")
print("upward edges:", ", ".join(f"{src} -> {dep}" for src, dep in upward) if upward else "none")
sys.exit(1 if sccs or upward or unplaced else 0)
