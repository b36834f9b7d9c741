"""The patient page's upload control in a real headless Chromium: a photo of a prescription
is added from the page, read by OCR, and found by a word of its text seconds later."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.api.conftest import Api, make_ins, patient
from tests.api.test_page import _results, _wait, browser  # noqa: F401 — the fixture
from tests.api.test_upload import PRESCRIPTION, photo, spaced

pytestmark = [pytest.mark.browser, pytest.mark.tesseract]

INS = make_ins(511)


def test_a_patient_adds_a_photo_from_the_page_and_finds_it_by_a_word(
    api: Api,
    browser: object,  # noqa: F811 (the fixture imported by name)
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    picture = tmp_path / "ordonnance.png"
    picture.write_bytes(photo(PRESCRIPTION))
    conflicting = tmp_path / "autre.png"
    conflicting.write_bytes(photo([*PRESCRIPTION, f"INS {spaced(make_ins(512))}"]))

    driver.get(f"{api.url}/?token={api.token(patient(INS))}")  # type: ignore[attr-defined]
    _wait(driver, lambda d: d.find_element(By.ID, "main").is_displayed())
    assert _results(driver) == []

    started = time.monotonic()
    driver.find_element(By.ID, "upload-file").send_keys(str(picture))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "upload").click()  # type: ignore[attr-defined]
    result = driver.find_element(By.ID, "upload-result")  # type: ignore[attr-defined]
    _wait(driver, lambda d: result.get_attribute("data-status") == "indexed", timeout=120)
    assert result.text.startswith("ordonnance.png : ")
    # The list is refreshed with it; a word of its text finds it.
    _wait(driver, lambda d: len(_results(d)) == 1)
    q = driver.find_element(By.ID, "q")  # type: ignore[attr-defined]
    q.send_keys("amoxicilline")
    driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
    _wait(
        driver,
        lambda d: (
            len(_results(d)) == 1
            and "amoxicilline" in d.find_element(By.CSS_SELECTOR, "#results li mark").text.lower()
        ),
    )
    seconds = time.monotonic() - started
    assert seconds < 120, seconds

    # A document naming someone else is refused, with the reason, and not listed.
    driver.find_element(By.ID, "upload-file").send_keys(str(conflicting))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "upload").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: result.get_attribute("data-status") == "rejected", timeout=120)
    assert result.text.startswith("autre.png : ")
    q.clear()
    driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: len(_results(d)) == 1)
