"""GX imported with scipy.stats and altair deferred: not run by the import, there when used."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from pipeline.quality.gx_import import DEFERRED_MODULES


def _run(code: str) -> str:
    """``code`` in a fresh interpreter (this one has imported who knows what), its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_gx_runs_neither_deferred_module() -> None:
    out = _run(
        """
        import sys
        from pipeline.quality.gx_import import DEFERRED_MODULES, import_great_expectations
        gx = import_great_expectations()
        assert gx.get_context  # GX itself is whole
        run = [n for n in sys.modules for d in DEFERRED_MODULES if n.startswith(d + ".")]
        print(sorted(run))
        """
    )
    assert out.strip() == "[]"


def test_a_deferred_module_is_the_real_one_at_first_use() -> None:
    out = _run(
        """
        import sys
        from pipeline.quality.gx_import import import_great_expectations
        import_great_expectations()
        from scipy import stats  # as GX's KL divergence expectation does
        import altair as alt
        print(round(float(stats.entropy([1, 2], [2, 1])), 6))
        print(alt.Chart.__name__)
        import scipy.stats._stats_py  # a submodule of a deferred package
        print(type(sys.modules["scipy.stats"]).__name__, sys.modules["scipy.stats"].entropy is stats.entropy)
        """
    )
    assert out.split() == ["0.231049", "Chart", "module", "True"]


def test_a_module_imported_before_is_left_alone() -> None:
    out = _run(
        f"""
        import scipy.stats, altair
        from pipeline.quality.gx_import import defer
        before = [id(scipy.stats), id(altair)]
        defer({DEFERRED_MODULES!r})
        import sys
        print(before == [id(sys.modules["scipy.stats"]), id(sys.modules["altair"])])
        """
    )
    assert out.strip() == "True"
