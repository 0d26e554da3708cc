"""Where documents come from: prose shipped with Python itself, or the user's files.

The built-in corpus needs no download and is the same on every machine with the same Python:
the language reference topics of `pydoc_data` plus the docstrings of the standard library. It is
real English technical prose (with some code), about 2 MB.
"""

from __future__ import annotations

import ast
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

_SKIP_DIRS = {"site-packages", "test", "tests", "idlelib", "turtledemo", "__pycache__"}


def builtin_documents() -> list[str]:
    """The built-in corpus, in a fixed order."""
    from pydoc_data.topics import topics  # the language reference as plain text

    docs = [topics[name] for name in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if _SKIP_DIRS.intersection(path.relative_to(stdlib).parts):
            continue
        docs.extend(_docstrings(path))
    return docs


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def path_documents(path: str) -> list[str]:
    """User documents: a .txt file (blank-line separated), a .jsonl file ({"text": ...}), or a directory."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"data.path {path!r} does not exist; point it at a file or directory of .txt/.jsonl")
    files = sorted(p for p in root.rglob("*") if p.suffix in {".txt", ".jsonl"}) if root.is_dir() else [root]
    docs: list[str] = []
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        if f.suffix == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        docs.append(str(json.loads(line)["text"]))
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise ValueError(f"{f}:{n}: expected a JSON object with a 'text' field ({e})") from e
        else:
            docs.extend(p.strip() for p in text.split("\n\n") if p.strip())
    if not docs:
        raise ValueError(f"data.path {path!r} holds no .txt or .jsonl text")
    return docs
