"""Parsing in worker processes: pypdf, hl7apy and the XML walk are pure Python, so
threads parse one input at a time under the GIL; processes parse on every core while
the ``Pipeline`` takes earlier inputs through the other stages.

``ParsePool`` runs ``parse_input`` in ``workers`` processes, each with the parser
registry its ``RegistryRecipe`` builds once. Processes come from the ``forkserver``
(never a plain ``fork``: the parent may hold threads, sockets and locks — Airflow's,
Elasticsearch's, the store's — that a forked child would inherit half-taken); the server
imports the parsers once and every worker forks from it already loaded.

A worker that dies (a parser crashing the interpreter, the kernel's OOM killer) breaks
its executor: every input in flight then is parsed again alone, in a fresh process, so
that only the input that kills its process is rejected (``parse_error``, naming the
death), and the run goes on with a new executor. An infrastructure failure (processes
cannot be started) raises ``ConfigurationError``.

Tesseract processes: one ``BoundedSemaphore(workers)`` is shared by every worker's OCR
engine (``ParserOptions.ocr_slots``), so ``workers`` processes parsing scans at once run
``workers`` tesseracts among them, not ``workers`` each.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import TypeVar

from parsers.registry import ParserOptions, ParserRegistry
from pipeline.errors import ConfigurationError
from pipeline.ingest.stages import InputFile, Parsed, parse_input
from pipeline.model import Problem, Reason
from pipeline.processes import without_main_module

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# What a worker of a broken executor was doing is not known: the input it read is named
# only by parsing each input in flight again alone.
_DIED = (
    "the parser's process died while reading this file (a crash of the interpreter or a "
    "native library, or killed for its memory); parsed alone again, it died again"
)


@dataclass(frozen=True)
class RegistryRecipe:
    """How a worker process builds its parser registry: a module-level function (a worker
    imports it by name) called with these options."""

    build: Callable[[ParserOptions], ParserRegistry]
    options: ParserOptions

    def registry(self) -> ParserRegistry:
        return self.build(self.options)


# The registry of this worker process, built once by ``_start_worker``.
_registry: ParserRegistry | None = None


def _start_worker(recipe: RegistryRecipe) -> None:
    global _registry
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()
    _registry = recipe.registry()


def _exit_with_parent(sentinel: int) -> None:
    # A run killed outright (kill -9, the crash tests' fault hook) cannot stop its workers:
    # left alone they would wait forever for work, holding its stdout and stderr open.
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _parse_here(item: InputFile) -> Parsed:
    assert _registry is not None, "a parse worker starts with _start_worker"
    return parse_input(_registry, item)


def _pid() -> int:
    return os.getpid()


class ParsePool:
    """``workers`` processes parsing inputs with the registry ``recipe`` builds.

    Started in the background: ``ready`` tells when the workers have imported the
    parsers and built their registry, so the caller parses in threads meanwhile and
    never waits for the start-up.
    """

    def __init__(self, recipe: RegistryRecipe, workers: int) -> None:
        self._context = multiprocessing.get_context("forkserver")
        # Process-wide, and harmless to any other user of the forkserver: the server (one
        # per parent process) imports the parsers and the pipeline once instead of each
        # worker importing them (~0.5 s of CPU each); no worker runs the parent's main
        # module (``without_main_module``). Ignored if the server already runs.
        self._context.set_forkserver_preload([__name__])
        self.workers = workers
        self.recipe = replace(
            recipe, options=replace(recipe.options, ocr_slots=self._context.BoundedSemaphore(workers))
        )
        self._lock = threading.Lock()
        self._executor = self._new_executor(workers)
        self._started: Future[None] = Future()
        threading.Thread(target=self._start, name="parse-pool-start", daemon=True).start()

    def _new_executor(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self.recipe,),
        )

    def _start(self) -> None:
        # Starting a process waits for the forkserver's imports: done here, off the caller's
        # thread; one call per worker so that every worker is up when this is done.
        try:
            for future in [self._submit(self._executor, _pid) for _ in range(self.workers)]:
                future.result()
        except (OSError, BrokenProcessPool) as exc:
            self._started.set_exception(exc)
        except (CancelledError, RuntimeError):  # closed before its workers were up
            self._started.cancel()
        else:
            self._started.set_result(None)

    @staticmethod
    def _submit(executor: ProcessPoolExecutor, fn: Callable[..., _T], *args: object) -> Future[_T]:
        # A submit may start the executor's processes (and the forkserver): none of them
        # imports this process's main module.
        with without_main_module():
            return executor.submit(fn, *args)

    def ready(self, timeout: float = 0) -> bool:
        """Whether the workers are up, waiting ``timeout`` seconds at most for them (raises
        ``ConfigurationError`` if they cannot start)."""
        try:
            exc = self._started.exception(timeout=timeout)
        except (TimeoutError, CancelledError):
            return False
        if exc is not None:
            raise ConfigurationError(f"cannot start the parser processes: {exc}") from exc
        return True

    def submit(self, item: InputFile) -> Future[Parsed]:
        """Parse ``item`` in a worker; a broken executor is replaced first."""
        with self._lock:
            try:
                return self._submit(self._executor, _parse_here, item)
            except BrokenProcessPool:
                log.warning("a parser process died: parsing goes on in new processes")
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor(self.workers)
                return self._submit(self._executor, _parse_here, item)

    def result(self, item: InputFile, future: Future[Parsed]) -> Parsed:
        """What ``submit`` gave for ``item``; if its worker died, ``item`` parsed alone
        again in a fresh process, and rejected if that one dies too."""
        try:
            return future.result()
        except BrokenProcessPool:
            return self.parse_alone(item)

    def parse_alone(self, item: InputFile) -> Parsed:
        """``item`` parsed in a process of its own: one that kills it is rejected."""
        alone = self._new_executor(1)
        try:
            future = self._submit(alone, _parse_here, item)
            return future.result()
        except BrokenProcessPool:
            log.error("the parser's process died reading %s (producer %s)", item.source, item.producer)
            return [], Problem(code=Reason.PARSE_ERROR, message=_DIED), None
        except OSError as exc:
            raise ConfigurationError(f"cannot start a parser process: {exc}", source=item.source) from exc
        finally:
            alone.shutdown(wait=True)

    def close(self) -> None:
        """Stop the workers: the inputs not started are cancelled; those running finish."""
        with self._lock:
            self._executor.shutdown(wait=False, cancel_futures=True)
