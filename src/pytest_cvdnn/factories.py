"""What determines a factory's model, found without running (or importing) any of its code.

A factory ``package.module:function`` is the user's Python; importing it usually imports Keras and
TensorFlow (seconds), which a warm run must not pay.  Its cache key is therefore read from the files:
the module's source, the sources of its packages' ``__init__.py`` and of every project file it imports,
transitively (found by reading the ``import`` statements with :mod:`ast` and looking the names up on
``sys.path`` the way the import system would, without executing anything).  A project file is one under
the rootdir (or beside the factory's top package) that is not an installed package; installed
libraries are pinned by the tool versions in the rest of the key.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["locate_module", "factory_files", "factory_digest"]

_INSTALLED = ("site-packages", "dist-packages")


def locate_module(name: str, search: Sequence[str | Path]) -> Path | None:
    """The file ``import name`` would load from ``search`` (``x.py`` or ``x/__init__.py``), without importing
    any parent package (``importlib.util.find_spec`` of a dotted name imports the parents).  None when it is
    not a source file on that path (a builtin, an extension module, or missing)."""
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    for entry in search:
        base = Path(entry or ".")
        folder = base.joinpath(*parts[:-1])
        if not folder.is_dir():
            continue
        for candidate in (folder / f"{parts[-1]}.py", folder / parts[-1] / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _package_inits(name: str, file: Path) -> list[tuple[str, Path]]:
    """(package, its ``__init__.py``) of every package above module ``name`` (they run when it is imported)."""
    parents = name.split(".")[:-1]
    folder = file.parent.parent if file.name == "__init__.py" else file.parent
    inits = []
    while parents:
        init = folder / "__init__.py"
        if init.is_file():
            inits.append((".".join(parents), init))
        parents.pop()
        folder = folder.parent
    return inits


def _imported_names(tree: ast.AST, package: str) -> Iterable[str]:
    """Absolute module names an AST imports (``from x import y`` yields x and x.y: y may be a module)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module:
                yield module
            yield from (f"{module}.{alias.name}" if module else alias.name for alias in node.names
                        if alias.name != "*")


_PARSED: dict[tuple[str, str, int, int, int], tuple[str, ...]] = {}


def _imports_of(file: Path, package: str) -> tuple[str, ...]:
    """The module names ``file`` imports (parsed once per file version: the key is asked for many times)."""
    st = file.stat()
    key = (str(file.resolve()), package, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _PARSED:
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except (SyntaxError, ValueError):  # hashed as bytes; running it will say what is wrong
            _PARSED[key] = ()
        else:
            _PARSED[key] = tuple(_imported_names(tree, package))
    return _PARSED[key]


def _is_project(file: Path, roots: Sequence[Path]) -> bool:
    resolved = file.resolve()
    if any(part in _INSTALLED for part in resolved.parts):
        return False
    return any(resolved.is_relative_to(root) for root in roots)


def factory_files(module: str, search: Sequence[str | Path], roots: Sequence[Path]) -> list[tuple[str, Path]]:
    """(module name, file) of the factory's module and of the project files it imports, transitively; the
    first is the factory's own module.  Raises LookupError when the module itself is not a source file."""
    first = locate_module(module, search)
    if first is None:
        raise LookupError(module)
    roots = [Path(r).resolve() for r in roots]
    top = first.parent if first.name != "__init__.py" else first.parent.parent
    for _ in module.split(".")[1:]:
        top = top.parent
    roots.append(top.resolve())  # the folder the factory's top package (or module) sits in
    found: dict[Path, str] = {}
    pending = [(module, first)]
    while pending:
        name, file = pending.pop()
        key = file.resolve()
        if key in found:
            continue
        found[key] = name
        pending.extend(_package_inits(name, file))
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        for imported in _imports_of(file, package):
            target = locate_module(imported, search)
            if target is not None and _is_project(target, roots):
                pending.append((imported, target))
    return [(name, file) for file, name in found.items()]


def factory_digest(module: str, func: str, search: Sequence[str | Path] | None = None,
                   roots: Sequence[Path] = ()) -> tuple[str, list[str]]:
    """SHA-256 over the factory's name and the bytes of its files; and those files (for messages)."""
    from .cache import sha256_bytes

    files = factory_files(module, list(sys.path if search is None else search), roots)
    blob = f"{module}:{func}".encode()
    for name, file in sorted(files, key=lambda item: str(item[1])):
        blob += b"\0" + name.encode() + b"\0" + file.read_bytes()
    return sha256_bytes(blob), [str(file) for _, file in files]
