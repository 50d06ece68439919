#!/usr/bin/env python3
"""Checks the links of the repository's Markdown files (README.md, CHANGELOG.md,
BENCHMARKS.md, docs/): every `](#anchor)` names a heading of the same file (by GitHub's
anchor rule), every relative link names a file or directory of the repository (and, with a
`#fragment` into a Markdown file, one of its headings), and no text names a file outside the
repository (`../shared`, API.md, SEED_API.md; nor does any Rust, shell or TOML source of the
workspace). Prints each broken link; exits 1 if any.

Run from anywhere: `python3 scripts/links.py`."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ["README.md", "CHANGELOG.md", "BENCHMARKS.md"] + sorted(
    str(path.relative_to(ROOT)) for path in (ROOT / "docs").rglob("*.md")
)
# Files that are no part of the repository: a reader of the repository cannot open them.
OUTSIDE = re.compile(r"\.\./shared|\bSEED_API\.md\b|\bAPI\.md\b")
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text):
    """The lines outside fenced code blocks, with their numbers."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped (but `-` and `_`),
    spaces made `-`."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub does."""
    seen = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def check(name):
    path = ROOT / name
    problems = []
    own = anchors(path)
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if OUTSIDE.search(line):
            problems.append(f"{name}:{number}: names a file outside the repository: {line.strip()}")
    for number, line in prose_lines(text):
        # Inline code shows links, it does not make them.
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:, …
            file_part, _, fragment = target.partition("#")
            if not file_part:
                if fragment not in own:
                    problems.append(f"{name}:{number}: `#{fragment}` is no heading of {name}")
                continue
            linked = (path.parent / file_part).resolve()
            if ROOT not in linked.parents and linked != ROOT:
                problems.append(f"{name}:{number}: `{target}` is outside the repository")
            elif not linked.exists():
                problems.append(f"{name}:{number}: `{target}` does not exist")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                problems.append(f"{name}:{number}: `{target}`: no such heading")
    return problems


def sources():
    """The workspace's Rust and shell sources (their docs and comments may not name files
    outside the repository either)."""
    for folder in ["cache-core", "cache-macros", "examples", "tests", "scripts"]:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".rs", ".sh", ".toml") and "target" not in path.parts:
                yield path


def main():
    problems = [problem for name in FILES if (ROOT / name).exists() for problem in check(name)]
    for path in sources():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                problems.append(
                    f"{path.relative_to(ROOT)}:{number}: names a file outside the repository"
                )
    for problem in problems:
        print(problem)
    checked = sum(1 for name in FILES if (ROOT / name).exists())
    print(f"links: {checked} files checked, {len(problems)} broken")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
