"""Settings read from the environment: the OCR pool size."""

from __future__ import annotations

import os

import pytest

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings


def test_ocr_workers_default_to_the_cpus_this_process_may_use() -> None:
    assert Settings.from_env({}).ocr_workers == len(os.sched_getaffinity(0))


def test_ocr_workers_from_the_environment() -> None:
    assert Settings.from_env({"CARNET_OCR_WORKERS": "3"}).ocr_workers == 3
    assert Settings.from_env({"CARNET_OCR_WORKERS": "0"}).ocr_workers == 1  # never no OCR at all
    with pytest.raises(ConfigurationError, match="CARNET_OCR_WORKERS"):
        Settings.from_env({"CARNET_OCR_WORKERS": "many"})
