"""Importing Great Expectations without the modules its package imports but the gate never uses.

GX's package ``__init__`` imports every expectation it ships. One of them (the KL
divergence expectation) imports ``scipy.stats`` and ``altair`` at module level and uses
them only inside its methods; the two cost ~0.8 s of CPU of GX's ~2.1 s import, paid by
every run. ``import_great_expectations`` puts a deferred module in their place first: a
module object that imports the real one at its first attribute access, so code that does
use them still gets them, at that point. Nothing else about GX changes.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
import types
from typing import Any

# Imported by GX's package but used only inside the methods of expectations Carnet never runs.
DEFERRED_MODULES = ("scipy.stats", "altair")


class DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is read."""

    _lock = threading.Lock()

    def __init__(self, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(spec.name)
        # The real spec, not yet run: the import system reads ``__spec__`` of a module it
        # finds in ``sys.modules`` (is it still initialising?) without that being a use.
        self.__spec__ = spec

    def __getattr__(self, attr: str) -> Any:
        # Only for attributes this stand-in lacks, i.e. the module's own.
        return getattr(self._real(), attr)

    def _real(self) -> types.ModuleType:
        with DeferredModule._lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            return importlib.import_module(self.__name__)


def defer(names: tuple[str, ...] = DEFERRED_MODULES) -> None:
    """Put a deferred module in place of each of ``names`` not imported yet (and installed)."""
    for name in names:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # its parent package is missing
            spec = None
        if spec is not None:  # else left to fail where GX imports it, as it would have
            sys.modules[name] = DeferredModule(spec)


def import_great_expectations() -> types.ModuleType:
    """``great_expectations``, imported with ``DEFERRED_MODULES`` deferred."""
    defer()
    import great_expectations

    return great_expectations
