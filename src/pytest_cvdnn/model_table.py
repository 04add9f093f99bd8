"""Per-model settings: ``[tool.cvdnn.models."PATTERN"]`` tables of pyproject.toml, so one model's input spec,
feeds or tolerances never leak to another.

A table is keyed by a model path or a glob (``fnmatch``, ``/`` separated, relative to the rootdir as the model
is configured); its keys are the ini keys without their ``cvdnn_`` prefix (``preprocess``, ``atol``, ``feed``, …).
The command line wins over a table, a table over the project-wide ini key.  Pure: no pytest.
"""

from __future__ import annotations

import difflib
import fnmatch
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import CvdnnError

__all__ = ["PER_MODEL_KEYS", "MODEL_SPECIFIC_KEYS", "read_tables", "values_for", "check_tables"]

#: the settings a table may set (the ini keys without ``cvdnn_``); the others are session-wide
PER_MODEL_KEYS = ("preprocess", "atol", "rtol", "srtol", "opset", "layout", "inputs", "images", "input_range", "feed",
                  "input_shape", "samples", "seed", "memory_budget", "ort_providers", "timeout", "min_agreement",
                  "max_accuracy_drop", "training_loader", "quantize")
#: settings that describe one model's inputs: set project-wide for several models they would leak between them
MODEL_SPECIFIC_KEYS = ("preprocess", "feed", "input_shape", "inputs", "training_loader")
#: table key -> settings.Option.dest
DEST = {"feed": "feeds"}


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - pytest depends on tomli below 3.11
        import tomli as tomllib
    with open(path, "rb") as fh:
        data: dict[str, Any] = tomllib.load(fh)
    return data


def read_tables(pyproject: Path | None) -> list[tuple[str, dict[str, Any]]]:
    """The ``[tool.cvdnn.models]`` tables of ``pyproject`` in file order (none without the file or the table);
    an unknown key, a non-table entry or a value of the wrong kind is an error naming it."""
    if pyproject is None or not pyproject.is_file():
        return []
    try:
        data = _load_toml(pyproject)
    except Exception:  # noqa: BLE001 - pytest reports an invalid pyproject.toml itself
        return []
    tool = data.get("tool", {}).get("cvdnn", {})
    unknown = sorted(set(tool) - {"models"})
    if unknown:
        raise CvdnnError(f"{pyproject}: unknown table [tool.cvdnn.{unknown[0]}]",
                         fix='per-model settings go in [tool.cvdnn.models."models/classifier.keras"] (a path or glob); '
                         "session-wide settings in [tool.pytest.ini_options] as cvdnn_* keys")
    tables = tool.get("models", {})
    if not isinstance(tables, dict):
        raise CvdnnError(f"{pyproject}: tool.cvdnn.models is not a table",
                         fix='write one table per model: [tool.cvdnn.models."models/a.keras"] with preprocess = "..."')
    out = []
    for pattern, table in tables.items():
        where = f'{pyproject}: [tool.cvdnn.models."{pattern}"]'
        if not isinstance(table, dict):
            raise CvdnnError(f"{where} is not a table", fix=f'write it as [tool.cvdnn.models."{pattern}"] followed by '
                             'key = "value" lines')
        for key, value in table.items():
            if key not in PER_MODEL_KEYS:
                close = difflib.get_close_matches(key.removeprefix("cvdnn_"), PER_MODEL_KEYS, n=1, cutoff=0.6)
                raise CvdnnError(f"{where}: unknown key {key!r}",
                                 fix=(f"did you mean {close[0]!r}? " if close else "")
                                 + f"a model's table takes: {', '.join(PER_MODEL_KEYS)}")
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise CvdnnError(f"{where}: {key} = {value!r} is not a string or a number",
                                 fix=f'write it as on the command line, e.g. {key} = "..."')
        out.append((str(pattern), dict(table)))
    return out


def _matches(pattern: str, model: str, rootdir: Path) -> bool:
    spelled = model.replace("\\", "/").removeprefix("./")
    candidates = {spelled}
    path = Path(model)
    try:
        candidates.add((path if path.is_absolute() else rootdir / path).resolve().relative_to(rootdir.resolve())
                       .as_posix())
    except ValueError:
        pass
    return any(fnmatch.fnmatchcase(c, pattern.removeprefix("./")) for c in candidates)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def values_for(tables: Sequence[tuple[str, Mapping[str, Any]]], model: str, rootdir: Path,
               pyproject: Path | None = None) -> dict[str, str]:
    """The table settings of ``model`` (by Option.dest, as text to parse).  A table naming the model's path wins
    over a glob (``"*"`` for defaults, then one model's own values); two globs, or two paths, that set the same key
    differently for it are an error (which one was meant cannot be known)."""
    found: dict[str, tuple[str, str]] = {}
    hits = [(pattern, table) for pattern, table in tables if _matches(pattern, model, rootdir)]
    for pattern, table in sorted(hits, key=lambda hit: not _is_glob(hit[0])):  # (globs first: a path overrides)
        for key, value in table.items():
            dest = DEST.get(key, key)
            if dest in found and found[dest][1] != str(value) and _is_glob(found[dest][0]) == _is_glob(pattern):
                raise CvdnnError(f"{pyproject or 'pyproject.toml'}: the model {model} is matched by "
                                 f'[tool.cvdnn.models."{found[dest][0]}"] and [tool.cvdnn.models."{pattern}"], which '
                                 f"set {key} differently",
                                 fix="make the patterns match disjoint models, or set the key in one table only")
            found[dest] = (pattern, str(value))
    return {dest: value for dest, (_, value) in found.items()}


def check_tables(tables: Sequence[tuple[str, Mapping[str, Any]]], models: Sequence[str], rootdir: Path,
                 pyproject: Path | None, project_wide: Sequence[str]) -> None:
    """A table that matches no configured model is an error (a misspelt path would leave its model unconfigured);
    so is a model-specific setting (input spec, feeds, input shape, inputs) set project-wide for several models
    without a table for each (one model's spec would be silently applied to the others)."""
    if not models:
        return
    for pattern, _ in tables:
        if not any(_matches(pattern, m, rootdir) for m in models):
            close = difflib.get_close_matches(pattern, list(models), n=1, cutoff=0.5)
            raise CvdnnError(f'{pyproject}: [tool.cvdnn.models."{pattern}"] matches none of the configured models '
                             f"({', '.join(models)})",
                             fix=(f"did you mean {close[0]!r}? " if close else "")
                             + "write the model's path as it is configured (relative to the rootdir), or a glob")
    if len(models) < 2:
        return
    for key in project_wide:
        if key not in MODEL_SPECIFIC_KEYS:
            continue
        dest = DEST.get(key, key)
        bare = [m for m in models if dest not in values_for(tables, m, rootdir, pyproject)]
        if len(bare) > 1:
            raise CvdnnError(
                f"cvdnn_{key} is set project-wide and applies to each of {len(bare)} models ({', '.join(bare)}): "
                "one model's inputs would be checked with another's settings",
                fix=f'set it per model in pyproject.toml: [tool.cvdnn.models."{bare[0]}"] {key} = "..." (a '
                f'[tool.cvdnn.models."*"] table applies it to every model on purpose)')
