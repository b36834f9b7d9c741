"""The committed ``make_samples.py`` scripts, loaded and checked from tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_script(path: Path) -> ModuleType:
    """A sample script as a module (they are scripts, not importable packages)."""
    spec = importlib.util.spec_from_file_location(f"samples_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_samples_match_their_generator(folder: Path, pattern: str, tmp_path: Path) -> None:
    """Re-running ``folder/make_samples.py`` writes exactly the committed ``pattern`` files."""
    load_script(folder / "make_samples.py").main(tmp_path)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in folder.glob(pattern))
    for name in written:
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), name
