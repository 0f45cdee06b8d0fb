"""Which code a stage runs, and a version of it that changes only when its behaviour can.

Rules pass :func:`code_version` of their stage's module as a parameter, so Snakemake reruns
a stage (and, through its outputs, everything downstream) when the code it runs changes, and
only then. A module's version is the SHA-256 of its syntax tree without docstrings: comments,
docstrings, blank lines, formatting, a ``touch`` or a ``git checkout`` change nothing; any
statement, name, constant or import does. The stage's code is its module and every chexdino
module it imports, at module level or inside functions (:func:`module_closure`); ``cli`` is
left out unless named, since it imports every stage to dispatch subcommands.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def module_closure(*modules: str) -> list[Path]:
    """Source files of the named chexdino modules and of every chexdino module they import."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if not path.is_file():
            raise ValueError(f"chexdino has no module {name!r} ({path} not found)")
        seen.add(name)
        todo.extend(_imported_modules(path) - seen - {"cli"})
    return [_module_file(name) for name in sorted(seen)]


def _module_file(name: str) -> Path:
    """``a`` -> ``a.py``; ``pkg.b`` -> ``pkg/b.py``; a subpackage ``pkg`` -> ``pkg/__init__.py``."""
    base = PACKAGE_DIR.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_name(f"{base.name}.py")


def _imported_modules(path: Path) -> set[str]:
    """chexdino modules imported anywhere in ``path`` (``__init__`` for package attributes).

    A module of a subpackage brings the subpackage's ``__init__`` with it, as Python runs it.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "chexdino":
                continue
            found |= _module_and_packages(parts[1:])
    return found


def _module_and_packages(parts: list[str]) -> set[str]:
    """The longest prefix of ``parts`` that is a chexdino module, plus its subpackages."""
    for end in range(len(parts), 0, -1):
        if _module_file(".".join(parts[:end])).is_file():
            return {".".join(parts[:i]) for i in range(1, end + 1)}
    return {"__init__"}


def behaviour(source: str, filename: str = "<source>") -> str:
    """The syntax tree of ``source`` without docstrings, as text: equal for two sources that
    differ only in comments, docstrings or layout."""
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def module_versions(modules: Iterable[str]) -> dict[str, str]:
    """Each named module's own version (its file only, imports not followed): 16 hex digits."""
    return {name: _file_version(_module_file(name)) for name in sorted(set(modules))}


def closure_versions(*modules: str) -> dict[str, str]:
    """:func:`module_versions` of every module in the named modules' closure, by dotted name."""
    names = [path.relative_to(PACKAGE_DIR).with_suffix("").as_posix().replace("/", ".")
             for path in module_closure(*modules)]
    return module_versions(name.removesuffix(".__init__") for name in names)


def _file_version(path: Path) -> str:
    if not path.is_file():
        raise ValueError(f"chexdino has no module file {path}")
    text = behaviour(path.read_text(), str(path))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_version(*modules: str) -> str:
    """SHA-256 over the behaviour of ``module_closure(*modules)``: equal iff the code the
    named modules run does the same."""
    digest = hashlib.sha256()
    for path in module_closure(*modules):
        name = path.relative_to(PACKAGE_DIR).as_posix()  # ``a.py`` for a top-level module
        digest.update(name.encode() + b"\0" + _file_version(path).encode() + b"\0")
    return digest.hexdigest()
