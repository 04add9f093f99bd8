"""pytest collector and items: one collector per model, one item per deployment check."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from .errors import CvdnnError, StageSkipped

if TYPE_CHECKING:
    from .checks import ItemSpec
    from .core import Deployment
    from .settings import ModelSettings
    from .sources import ModelSource

__all__ = ["ModelEntry", "ModelFile", "ModelDirectory", "ModelCollector", "CheckItem", "RECORD_KEY"]

#: the longest headline of a failure (its first line), and of its first two lines (JUnit keeps 500 characters)
HEADLINE = 200
FIRST_LINES = 480

#: key of the user_properties entry that carries a check's result (JSON) to the controller
RECORD_KEY = "cvdnn"


@dataclass(frozen=True)
class ModelEntry:
    """A configured model and how to reach its (memoised) deployment."""

    settings: "ModelSettings"
    source: "ModelSource"
    deployment: Callable[..., "Deployment"]  # (target (None: the cv2 installed here), format, engine=None)
    checks: tuple["ItemSpec", ...]


def figures_wanted(config: pytest.Config) -> bool:
    """Are pictures of the evidence wanted: an HTML report (--cvdnn-html or its ini key), or pytest-html?"""
    return bool(config.getoption("cvdnn_html", None) or config.getini("cvdnn_html") or html_plugin_writes(config))


def html_plugin_writes(config: pytest.Config) -> bool:
    """Does pytest-html write a report in this session (installed is not enough: ``--html`` asks for it)?"""
    return config.pluginmanager.hasplugin("html") and bool(config.getoption("htmlpath", None))


def _figures(dep: "Deployment", check: str, data: dict[str, Any]) -> dict[str, Any]:
    """``{"figures": [...]}`` for the item's record; a figure that cannot be made is said, never a failure."""
    from .figures import for_check

    try:
        return {"figures": for_check(dep, check, data)}
    except Exception as exc:  # noqa: BLE001 - pictures are a bonus: the verdict stands without them
        return {"figures": [], "figures_error": f"{type(exc).__name__}: {exc}"[:300]}


class _ChecksMixin:
    entry: ModelEntry

    def _items(self) -> Iterator["CheckItem"]:
        assert isinstance(self, pytest.Collector)  # (every class that mixes this in is one)
        for spec in self.entry.checks:
            yield CheckItem.from_parent(self, name=spec.name, check=spec.check, target=spec.target,
                                        fmt=spec.fmt, engine=spec.engine, device=spec.device)


class ModelCollector(_ChecksMixin, pytest.Collector):
    """The checks of a model made by a factory function (a child of its module's ModelFile)."""

    def __init__(self, *, entry: ModelEntry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry

    def collect(self) -> Iterator["CheckItem"]:
        return self._items()


class ModelFile(_ChecksMixin, pytest.File):
    """A model file (.keras/.h5/.onnx) whose checks are items; or a factory module holding several."""

    def __init__(self, *, entries: list[ModelEntry], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entries = entries
        self.entry = entries[0]

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        if self.entry.source.kind == "factory":
            for entry in self.entries:  # one sub-collector per factory function in this module
                name = str(entry.source.factory).split(":")[1]
                yield ModelCollector.from_parent(self, name=name, entry=entry)
        else:
            yield from self._items()


class ModelDirectory(_ChecksMixin, pytest.Directory):
    """A TensorFlow SavedModel folder, collected as one model instead of being walked."""

    def __init__(self, *, entries: list[ModelEntry], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entries[0]

    def collect(self) -> Iterator["CheckItem"]:
        return self._items()


def _spec_dict(dep: "Deployment") -> dict[str, Any] | None:
    """The effective input spec for the report (None if the model could not be read)."""
    try:
        return dep.spec.as_dict()
    except (CvdnnError, StageSkipped):
        return None


class CheckItem(pytest.Item):
    """One deployment check (``convert``, ``load``, ``parity[keras-cv2dnn]``, ...)."""

    def __init__(self, *, check: str, target: str | None = None, fmt: str = "onnx", engine: str | None = None,
                 device: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.target = target
        self.fmt = fmt
        self.engine = engine  # None: the session's engine
        self.device = device  # None: the session's device
        self.add_marker(pytest.mark.cvdnn_check)
        # with xdist --dist loadgroup, all checks of a model run on one worker (one model in memory);
        # only where xdist is installed: its marker is unknown (an error under --strict-markers) otherwise
        if self.config.pluginmanager.hasplugin("xdist"):
            self.add_marker(pytest.mark.xdist_group(name=self.parent.nodeid if self.parent else self.name))

    @property
    def entry(self) -> ModelEntry:
        parent = self.parent
        assert isinstance(parent, _ChecksMixin)  # (a check item is made by its model's collector only)
        return parent.entry

    def _record(self, outcome: str, message: str, data: dict[str, Any], seconds: float) -> None:
        dep = self.entry.deployment(self.target, self.fmt, self.engine, self.device)
        if outcome != "skipped" and figures_wanted(self.config):
            data = {**data, **_figures(dep, self.check, data)}
        payload = {
            "model": self.entry.settings.model,
            "check": self.name,
            "target": dep.target_label,
            "format": self.fmt,
            "extra_engine": self.engine is not None,
            "device": dep.settings.device,
            "extra_device": self.device is not None,
            "outcome": outcome,
            "message": message,
            "seconds": round(seconds, 4),
            "data": data,
            "environment": dep.environment(),
            "spec": _spec_dict(dep),
            "events": list(dep.events),
        }
        self.user_properties.append((RECORD_KEY, json.dumps(payload, default=str)))

    def runtest(self) -> None:
        from .checks import CheckFailed, run_check

        dep = self.entry.deployment(self.target, self.fmt, self.engine, self.device)
        if self.check == "load":  # what else runs on this deployment: the load check starts some of it early
            dep.upcoming.update(i.check for i in self.session.items if isinstance(i, CheckItem)
                                and i.parent is self.parent
                                and (i.target, i.fmt, i.engine, i.device)
                                == (self.target, self.fmt, self.engine, self.device))
        dep.prepare()  # (the TensorFlow helper takes a cold model's conversion: queued once)
        start = time.perf_counter()
        try:
            result, seconds = run_check(dep, self.check)
        except StageSkipped as exc:
            self._record("skipped", str(exc), {}, time.perf_counter() - start)
            pytest.skip(str(exc))
        except CheckFailed as exc:
            self._record("failed", str(exc), exc.data, time.perf_counter() - start)
            raise
        except CvdnnError as exc:
            self._record("failed", str(exc), {"node": exc.node}, time.perf_counter() - start)
            raise
        except Exception as exc:
            self._record("failed", f"{type(exc).__name__}: {exc}", {}, time.perf_counter() - start)
            raise
        self._record("passed", result.message, result.data, seconds)
        self.add_report_section("call", "cvdnn", result.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        """The verdict's headline on the first line (what pytest's short summary shows), its Fix on the second
        (both within JUnit's 500-character ``message`` attribute, which keeps whole lines), then the whole
        verdict, fix and details."""
        if isinstance(excinfo.value, CvdnnError):
            from .errors import headline

            exc = excinfo.value
            message, fix = " ".join(exc.message.split()), " ".join((exc.fix or "").split())
            first = f"{self.entry.settings.model} :: {self.name}: {headline(message, HEADLINE)}"
            lines = [first] + ([f"Fix: {headline(fix, max(80, FIRST_LINES - len(first)))}"] if fix else [])
            whole = " ".join(str(exc).split())
            return "\n".join(lines) + f"\n\n{whole}" + (f"\n\n{exc.details}" if exc.details else "")
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name
