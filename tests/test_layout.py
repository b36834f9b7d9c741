"""The house's layout rules, read from the source with ``ast`` (nothing is imported):
no import cycle among Carnet's modules, and imports that flow one way where the
layering is meant to hold."""

from __future__ import annotations

import ast
import functools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "parsers", "dags", "generator")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imported(node: ast.AST, here: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The Carnet modules an import statement names (``from a import b`` counts as
    ``a.b`` when ``b`` is a module, else as ``a``)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield from _known_prefix(alias.name, known)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = here.split(".") if is_package else here.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            yield from _known_prefix(candidate if candidate in known else base, known)


def _known_prefix(name: str, known: set[str]) -> Iterator[str]:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            yield ".".join(parts[:end])
            return


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the Carnet modules it imports, at top level or inside functions alike
    (a lazy import is still a dependency; only ``TYPE_CHECKING`` blocks are left out)."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(child) for stmt in node.body for child in ast.walk(stmt))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) not in skip:
                edges.update(_imported(node, name, path.name == "__init__.py", known))
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_the_cycle_finder_finds_a_cycle() -> None:
    # A finder that cannot report a cycle would make the test below pass forever.
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "pipeline.ingest.run" in graph["pipeline.ingest"]  # ``from .run import …``
    assert "pipeline.model" in graph["pipeline.ingest.stages"]
    assert len(graph) > 40


# No accepted cycle: the registry imports each parser lazily (a parser's heavy library
# loads only when used) and hands the HL7 parser the registry of embedded documents.
ACCEPTED_CYCLES: list[list[str]] = []


def test_no_import_cycle() -> None:
    cycles = [c for c in find_cycles(import_graph()) if c not in ACCEPTED_CYCLES]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


# (lower layer, modules it must never import): imports flow from the DAGs and the
# ingestion down to the parsers and the model, never back up.
ONE_WAY = [
    (
        "parsers",
        (
            "pipeline.ingest",
            "pipeline.feeds",
            "pipeline.store",
            "pipeline.index",
            "pipeline.api",
            "pipeline.cli",
            "pipeline.settings",
            "dags",
        ),
    ),
    (
        "pipeline.model",
        (
            "pipeline.ingest",
            "pipeline.feeds",
            "pipeline.store",
            "pipeline.index",
            "pipeline.api",
            "pipeline.settings",
            "parsers",
            "dags",
        ),
    ),
    ("pipeline.errors", ("pipeline", "parsers", "dags")),
    ("pipeline.feeds", ("pipeline.ingest", "pipeline.index", "pipeline.api", "dags")),
    ("pipeline.store", ("pipeline.ingest", "pipeline.feeds", "pipeline.index", "pipeline.api", "dags")),
    ("pipeline.s3", ("pipeline.ingest", "pipeline.feeds", "pipeline.store", "dags")),
    ("pipeline.index", ("pipeline.ingest", "pipeline.feeds", "pipeline.store", "pipeline.api", "dags")),
    ("pipeline", ("dags",)),
    # The per-document stages are pure: no backend, and nothing of the pipeline that runs them.
    (
        "pipeline.ingest.stages",
        (
            "pipeline.index",
            "pipeline.store",
            "pipeline.ledger",
            "pipeline.access",
            "pipeline.state",
            "pipeline.crypto",
            "pipeline.audit",
            "pipeline.ingest",
        ),
    ),
    # Demo tooling: only the CLI's ``generate`` command reaches it (lazily).
    ("pipeline.ingest", ("generator",)),
    ("pipeline.index", ("generator",)),
    ("pipeline.store", ("generator",)),
    ("pipeline.feeds", ("generator",)),
    ("pipeline.api", ("generator",)),
    ("dags", ("generator",)),
]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(("lower", "forbidden"), ONE_WAY, ids=[lower for lower, _ in ONE_WAY])
def test_imports_flow_one_way(lower: str, forbidden: tuple[str, ...]) -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if _within(module, lower)
        for target in targets
        if any(_within(target, f) for f in forbidden) and not any(_within(target, own) for own in (lower,))
    )
    assert not wrong, "imports against the flow: " + ", ".join(wrong)


def _environment_reads(path: Path) -> list[int]:
    """Lines of ``path`` that touch the process environment (``os.environ``, ``environ``
    imported from ``os``, ``os.getenv``, ``getenv``)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "environb", "getenv")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(a.name in ("environ", "environb", "getenv") for a in node.names)
        ):
            lines.append(node.lineno)
    return sorted(lines)


# Modules allowed to touch the environment besides the settings module, and why.
ENVIRONMENT_EXCEPTIONS = {
    # Sets (does not read) the OpenMP thread limit the tesseract child process inherits.
    "parsers/ocr.py",
}


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = {
        str(path.relative_to(ROOT)): lines
        for path in _modules().values()
        if (lines := _environment_reads(path)) and path != ROOT / "pipeline" / "settings.py"
    }
    unexpected = {p: lines for p, lines in readers.items() if p not in ENVIRONMENT_EXCEPTIONS}
    assert not unexpected, f"read the environment through pipeline.settings.Settings: {unexpected}"
    stale = ENVIRONMENT_EXCEPTIONS - set(readers)
    assert not stale, f"no longer reading the environment, drop from the exceptions: {stale}"


def test_the_environment_scan_sees_every_spelling(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom os import environ\na = os.environ['X']\nb = os.getenv('Y')\n"
        "c = os.environ.get('Z')\nd = os.path.join('a')\n"
    )
    assert _environment_reads(sample) == [2, 3, 4, 5]


def _layout_table() -> list[str]:
    """The paths named in the first column of README's Layout table (``a/b.py``, ``c.py``
    after ``a/`` meaning ``a/c.py``)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    paths = []
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        folder = ""
        for name in row.split("|")[1].replace("`", "").split(","):
            name = name.strip()
            if "/" in name.rstrip("/"):
                folder = name.rsplit("/", 1)[0] + "/" if not name.endswith("/") else ""
            paths.append(name if "/" in name.rstrip("/") or not folder else folder + name)
    return paths


def test_the_readme_layout_table_matches_the_tree() -> None:
    named = _layout_table()
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, f"README's layout table names paths that do not exist: {missing}"
    # Only what the repository holds: an install or a run leaves untracked folders
    # (carnet.egg-info, .carnet, build) that are not part of the layout.
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    tracked_paths = {"/".join(f.split("/")[:depth]) for f in tracked for depth in (1, 2)}
    modules = [
        p
        for pkg in ("pipeline",)
        for p in sorted((ROOT / pkg).iterdir())
        if ((p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists())
        and str(p.relative_to(ROOT)) in tracked_paths
    ]
    tops = [
        p
        for p in sorted(ROOT.iterdir())
        if p.is_dir()
        and not p.name.startswith((".", "_"))
        and p.name != "pipeline"
        and p.name in tracked_paths
    ]
    covered = {n.rstrip("/") for n in named}
    unlisted = [
        str(p.relative_to(ROOT)) for p in [*modules, *tops] if str(p.relative_to(ROOT)) not in covered
    ]
    assert not unlisted, f"not in README's layout table: {unlisted}"
