"""Parsing in worker processes (``pipeline.ingest.parsing``): inputs are parsed in other
processes, the outcomes are those of the serial path (GX in its own process too), a
parser that kills its process rejects only its input, and tesseract runs at most
``workers`` at once among them all."""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from parsers.registry import ParserOptions, ParserRegistry, default_registry
from pipeline.ingest import InputFile, Pipeline, ingest_sources, open_backends, run
from pipeline.ingest.parsing import ParsePool, RegistryRecipe
from pipeline.model import Format, Outcome, ParsedDocument, Reason, Status
from pipeline.quality import QualityGate
from pipeline.settings import Settings
from tests.conftest import hl7_batch

CRASH = b"CRASH THE PARSER"


class _Pid:
    """A parser reporting the process it runs in."""

    name = "pid"

    def score(self, head: bytes) -> int:
        return 1000 if head.startswith(b"PID") else 0

    def parse(self, data: bytes, *, source: str) -> list[ParsedDocument]:
        return [ParsedDocument(source=source, format=Format.CDA, text=str(os.getpid()))]


class _Crasher:
    """A parser that ends its interpreter at once, as a segfault in a native library would."""

    name = "crasher"

    def score(self, head: bytes) -> int:
        return 1000 if head.startswith(CRASH) else 0

    def parse(self, data: bytes, *, source: str) -> list[ParsedDocument]:
        os._exit(70)


def _test_registry(options: ParserOptions) -> ParserRegistry:
    """The default parsers, and the two above (built in each worker, imported by name)."""
    return ParserRegistry([_Pid(), _Crasher(), *default_registry(options).parsers])


def _fake_tesseract_registry(fake: str, options: ParserOptions) -> ParserRegistry:
    return default_registry(dataclasses.replace(options, ocr_command=fake))


@pytest.fixture
def processes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``parse_ahead`` starts its workers at the first input and waits for them, so that
    every input of a small test goes to a process."""
    monkeypatch.setattr(run, "_PROCESSES_AFTER", 0)
    monkeypatch.setattr(run, "_READ_HERE_BELOW", 0)  # small HL7 files sent ahead too
    monkeypatch.setattr(ParsePool, "ready", functools.partialmethod(ParsePool.ready, timeout=120))


@pytest.fixture
def pool() -> Iterator[ParsePool]:
    pool = ParsePool(RegistryRecipe(_test_registry, ParserOptions()), 2)
    assert pool.ready(timeout=120)
    yield pool
    pool.close()


def _outcomes(outcomes: tuple[Outcome, ...] | list[Outcome]) -> list[tuple[object, ...]]:
    return [(o.source, o.status, o.doc_id, o.patient_id, tuple(r.code for r in o.reasons)) for o in outcomes]


def test_inputs_are_parsed_in_other_processes(pool: ParsePool) -> None:
    items = [InputFile(data=b"PID %d" % n, source=f"{n}.pid", producer="p") for n in range(6)]
    futures = [pool.submit(item) for item in items]
    pids = {int(pool.result(item, f)[0][0].text) for item, f in zip(items, futures, strict=True)}
    assert pids and os.getpid() not in pids and len(pids) <= 2


def test_a_parser_killing_its_process_rejects_only_its_input(pool: ParsePool) -> None:
    items = [
        InputFile(data=CRASH if n == 3 else b"PID %d" % n, source=f"{n}.bin", producer="p") for n in range(8)
    ]
    futures = [pool.submit(item) for item in items]
    parsed = [pool.result(item, f) for item, f in zip(items, futures, strict=True)]
    docs, problem, _ = parsed[3]
    assert docs == [] and problem is not None and problem.code is Reason.PARSE_ERROR
    assert "process died" in problem.message
    assert all(p[1] is None and len(p[0]) == 1 for n, p in enumerate(parsed) if n != 3)
    # The pool goes on with new processes.
    after = InputFile(data=b"PID after", source="after.pid", producer="p")
    assert pool.result(after, pool.submit(after))[0][0].text.isdigit()


def _feed(tmp_path: Path) -> Path:
    from generator import generate_feed

    root = tmp_path / "feed"
    generate_feed(root, seed=11, patients=8, documents=40, include_bad=True, scans=0)
    return root


def test_outcomes_are_those_of_the_serial_path(tmp_path: Path, processes_at_once: None) -> None:
    feed = _feed(tmp_path)
    serial = ingest_sources([str(feed)], Settings(data_dir=tmp_path / "serial", ocr_workers=1))
    calls: list[str] = []
    submit = ParsePool.submit

    def counted(self: ParsePool, item: InputFile) -> object:
        calls.append(item.source)
        return submit(self, item)

    started: list[QualityGate] = []
    start = QualityGate.start

    def gate_started(self: QualityGate) -> None:
        started.append(self)
        start(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ParsePool, "submit", counted)
        mp.setattr(QualityGate, "start", gate_started)
        pooled = ingest_sources([str(feed)], Settings(data_dir=tmp_path / "pooled", ocr_workers=2))
    assert calls, "parsed in worker processes"
    assert started, "gated in the GX worker"
    assert {o.status for o in serial.outcomes} >= {Status.INDEXED, Status.REJECTED}
    assert _outcomes(pooled.outcomes) == _outcomes(serial.outcomes)


def test_a_crashing_input_in_a_run_is_rejected_and_the_run_goes_on(
    tmp_path: Path, processes_at_once: None
) -> None:
    feed = _feed(tmp_path)
    serial = ingest_sources([str(feed)], Settings(data_dir=tmp_path / "serial", ocr_workers=1))
    crasher = next(feed.rglob("*.hl7")).with_name("0000-crash.bin")
    crasher.write_bytes(CRASH)
    settings = Settings(data_dir=tmp_path / "pooled", ocr_workers=2)
    recipe = RegistryRecipe(_test_registry, ParserOptions(ocr_workers=2))
    with Pipeline(settings, open_backends(settings, recipe=recipe)) as pipe:
        pipe.start_run("ingest", str(feed), exclusive=True)
        from pipeline.ingest import iter_source_inputs

        for item in pipe.parse_ahead(iter_source_inputs([str(feed)], producer=None, settings=settings)):
            pipe.process(item)
    crashed = [o for o in pipe.outcomes if o.source == str(crasher)]
    assert [(o.status, o.reasons[0].code) for o in crashed] == [(Status.REJECTED, Reason.PARSE_ERROR)]
    others = [o for o in pipe.outcomes if o.source != str(crasher)]
    assert sorted(_outcomes(others), key=str) == sorted(_outcomes(serial.outcomes), key=str)


_FAKE_TESSERACT = """#!{python}
# Reads image paths on stdin as `tesseract stdin stdout ... stream_filelist=true tsv` does;
# records how many of its kind are reading a page at once.
import os, sys, time
running = {running!r}
mine = os.path.join(running, str(os.getpid()))
out = sys.stdout
out.write("level\\tpage_num\\tblock_num\\tpar_num\\tline_num\\tword_num\\tleft\\ttop\\twidth\\theight\\tconf\\ttext\\n")
out.flush()
for n, line in enumerate(sys.stdin, start=1):
    if not line.strip().endswith("blank.pgm"):
        open(mine, "w").close()
        with open({log!r}, "a") as log:
            log.write("%d\\n" % len(os.listdir(running)))
        time.sleep(0.3)
        os.unlink(mine)
        out.write("5\\t%d\\t1\\t1\\t1\\t1\\t0\\t0\\t10\\t10\\t95\\tBonjour\\n" % n)
    out.write("1\\t%d\\t0\\t0\\t0\\t0\\t0\\t0\\t8\\t8\\t-1\\t\\n" % n)
    out.flush()
"""


def _tiff(pages: int) -> bytes:
    from PIL import Image

    frames = [Image.new("L", (200, 100), 255) for _ in range(pages)]
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:])
    return out.getvalue()


def test_tesseract_runs_at_most_workers_at_once_among_all_processes(tmp_path: Path) -> None:
    running, log = tmp_path / "running", tmp_path / "log"
    running.mkdir()
    fake = tmp_path / "tesseract"
    fake.write_text(_FAKE_TESSERACT.format(python=sys.executable, running=str(running), log=str(log)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    # Two workers, each reading four-page scans two pages at a time: four tesseracts at
    # once without the shared bound.
    recipe = RegistryRecipe(
        functools.partial(_fake_tesseract_registry, str(fake)), ParserOptions(ocr_workers=2)
    )
    pool = ParsePool(recipe, 2)
    try:
        items = [InputFile(data=_tiff(4), source=f"{n}.tiff", producer="p") for n in range(4)]
        futures = [pool.submit(item) for item in items]
        parsed = [pool.result(item, f) for item, f in zip(items, futures, strict=True)]
    finally:
        pool.close()
    assert all(problem is None and docs[0].ocr_pages == 4 for docs, problem, _ in parsed), parsed
    at_once = [int(n) for n in log.read_text().split()]
    assert len(at_once) == 16 and max(at_once) <= 2


def test_small_hl7_files_are_read_here_and_start_no_process(tmp_path: Path) -> None:
    """A feed of small HL7 files: each read by ``process`` (its trip to a worker would cost
    more than its parse), none sent ahead, and no worker process started for them; a PDF
    after them starts the workers."""
    feed = tmp_path / "feed"
    feed.mkdir()
    for n in range(run._PROCESSES_AFTER + 4):
        (feed / f"m{n:03d}.hl7").write_bytes(hl7_batch(1, start=n))
    submitted: list[str] = []
    pools: list[ParsePool] = []
    submit, init = ParsePool.submit, ParsePool.__init__

    def counted(self: ParsePool, item: InputFile) -> object:
        submitted.append(Path(item.source).name)
        return submit(self, item)

    def started(self: ParsePool, *args: object) -> None:
        pools.append(self)
        init(self, *args)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ParsePool, "submit", counted)
        mp.setattr(ParsePool, "__init__", started)
        summary = ingest_sources([str(feed)], Settings(data_dir=tmp_path / "carnet", ocr_workers=2))
    assert [o.status for o in summary.outcomes] == [Status.INDEXED] * (run._PROCESSES_AFTER + 4)
    assert submitted == [] and pools == []

    (feed / "z-report.pdf").write_bytes(
        (Path(__file__).parent / "samples" / "pdf" / "biology_text.pdf").read_bytes()
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ParsePool, "__init__", started)
        ingest_sources([str(feed)], Settings(data_dir=tmp_path / "again", ocr_workers=2))
    assert len(pools) == 1


def test_a_file_of_more_messages_than_a_flush_is_read_here_a_message_at_a_time(
    tmp_path: Path, processes_at_once: None
) -> None:
    """Not parsed ahead in a worker (which would send all its documents back at once): read
    by ``process``, each message only once the ones before it are through, flushed as it
    goes. A file of fewer messages still goes to a worker."""
    from parsers.hl7 import Hl7Parser

    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "a-three.hl7").write_bytes(hl7_batch(3))
    (feed / "b-one.hl7").write_bytes(hl7_batch(1, start=3))
    events: list[str] = []
    submit, flush, iter_documents = ParsePool.submit, Pipeline.flush, Hl7Parser.iter_documents

    def submitted(self: ParsePool, item: InputFile) -> object:
        events.append(f"submit {Path(item.source).name}")
        return submit(self, item)

    def read(self: Hl7Parser, data: bytes, *, source: str) -> Iterator[ParsedDocument]:
        for doc in iter_documents(self, data, source=source):
            events.append("read")
            yield doc

    def flushed(self: Pipeline) -> None:
        events.append(f"flush {len(self._pending)}")
        flush(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ParsePool, "submit", submitted)
        mp.setattr(Hl7Parser, "iter_documents", read)
        mp.setattr(Pipeline, "flush", flushed)
        summary = ingest_sources(
            [str(feed)], Settings(data_dir=tmp_path / "carnet", ocr_workers=2, flush_every=2)
        )
    assert [o.status for o in summary.outcomes] == [Status.INDEXED] * 4
    assert events[:6] == ["submit b-one.hl7", "read", "read", "flush 2", "read", "flush 2"]
