"""Text for benchmarks that nobody here wrote: English prose and source code from
Python's own standard library (its docstrings and its modules' source).

A made-up vocabulary flatters the compressor and the search index (a few hundred words
repeat); real prose and code have the vocabulary, the identifiers and the punctuation of
what agents send. Each call returns a window at a random offset, so texts are distinct
and realistic. Deterministic for a given seed and Python version.
"""

import ast
import random
import sysconfig
from collections import Counter
from functools import cache
from pathlib import Path

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Enough modules for about 10 MB of code and 2 MB of docstrings; tests and vendored
# packages left out.
_SKIP = ("test", "idlelib", "lib2to3", "site-packages", "ensurepip", "tkinter", "turtledemo")


@cache
def _sources() -> list[str]:
    files = sorted(
        p
        for p in STDLIB.rglob("*.py")
        if not any(part in _SKIP or part.startswith("test") for part in p.relative_to(STDLIB).parts)
    )
    out = []
    for path in files:
        try:
            out.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return out


@cache
def _code_lines() -> list[str]:
    return [line for source in _sources() for line in source.splitlines() if line.strip()]


@cache
def _prose_words() -> list[str]:
    words: list[str] = []
    for source in _sources():
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    words += doc.split()
    return words


def prose(rng: random.Random, words: int) -> str:
    """About `words` words of English prose (a run of docstrings)."""
    pool = _prose_words()
    start = rng.randrange(len(pool) - words)
    return " ".join(pool[start : start + words])


def code(rng: random.Random, lines: int) -> str:
    """`lines` consecutive non-blank lines of Python source."""
    pool = _code_lines()
    start = rng.randrange(len(pool) - lines)
    return "\n".join(pool[start : start + lines])


@cache
def _rare() -> list[str]:
    counts = Counter(w.lower() for w in _prose_words() if w.isalpha() and len(w) > 5)
    return sorted(w for w, n in counts.items() if 2 <= n <= 5)


def rare_words(rng: random.Random, n: int) -> list[str]:
    """Words that occur a few times in the prose: what a user searches for."""
    return rng.sample(_rare(), n)
