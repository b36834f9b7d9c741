"""Starting Carnet's own worker processes (parsers, Great Expectations) from any host.

multiprocessing's ``spawn`` and ``forkserver`` children import the parent's ``__main__``
again (by path, as ``__mp_main__``) before they run anything. Carnet's workers need
nothing from it, and some hosts' main module cannot be imported twice: under Airflow it is
the ``airflow`` script, whose import configures Airflow's database, which a task process
is not allowed to reach (Airflow 3), so every child died before its first line.

Nor can every host have children at all: a Celery worker runs its tasks in daemonic pool
processes, which multiprocessing forbids to start any (``can_start_processes``); there the
parsers run in threads and GX in the task's own process, and Celery's own workers are the
run's parallelism.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager

_main_swap = threading.Lock()


@contextmanager
def without_main_module() -> Iterator[None]:
    """Processes started within this block do not import this process's ``__main__``.

    multiprocessing reads ``sys.modules["__main__"]`` when it starts a process (its
    ``__spec__``, else its ``__file__``): a bare stand-in is there meanwhile, so the child
    is told of no main module. Only what the child is given (a module-level function and
    its arguments, pickled by reference) is imported there.
    """
    with _main_swap:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


def can_start_processes() -> bool:
    """Whether this process may start worker processes (not a daemonic one, as a Celery
    worker's pool processes are)."""
    return not multiprocessing.current_process().daemon
