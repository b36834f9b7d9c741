"""The patient page in a real headless Chromium (Debian's chromium + chromium-driver, Selenium)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.model import DocClass, Format, LabResult, Visibility
from tests.api.conftest import Api, make_ins, patient, professional

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CARNET_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CARNET_CHROMEDRIVER", "/usr/bin/chromedriver")
INS = make_ins(501)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = "chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    # Headless Chromium drops downloads unless told where to put them.
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def _wait(driver: object, condition: object, timeout: float = 15) -> object:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)  # type: ignore[arg-type]


def _results(driver: object) -> list[str]:
    # Read in one script call: the list is re-rendered while the test polls it.
    return driver.execute_script(  # type: ignore[attr-defined,no-any-return]
        "return [...document.querySelectorAll('#results li')].map(li => li.dataset.docId)"
    )


def test_patient_searches_filters_opens_downloads_and_sees_history(api: Api, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    api.file(
        INS,
        "hb-2024",
        text="Numération : hémoglobine 13,5 g/dL, plaquettes normales.",
        title="Bilan sanguin",
        document_date=dt.date(2024, 3, 1),
        content=b"%PDF-1.4 bilan sanguin hemoglobine",
        format=Format.PDF,
    )
    api.file(
        INS,
        "rx-2025",
        doc_class=DocClass.PRESCRIPTION,
        text="Amoxicilline 1 g matin et soir.",
        title="Ordonnance",
        document_date=dt.date(2025, 1, 10),
    )
    api.file(
        INS,
        "secret",
        text="Hémoglobine glyquée en attente d'annonce.",
        visibility=(Visibility.INVISIBLE_PATIENT,),
    )
    api.file(make_ins(502), "hb-other", text="Hémoglobine d'un autre patient.")
    # A professional looked at the record earlier: the patient must see it in the history.
    api.put(patient(INS), f"/patients/{INS}/authorisations/10101234567")
    assert api.get(professional(), f"/patients/{INS}/documents").status_code == 200

    driver.get(f"{api.url}/?token={api.token(patient(INS))}")  # type: ignore[attr-defined]
    _wait(driver, lambda d: _results(d) == ["rx-2025", "hb-2024"])
    assert "token" not in driver.current_url  # type: ignore[attr-defined]
    assert "Patient test" in driver.find_element(By.ID, "who").text  # type: ignore[attr-defined]

    # Full-text search with a highlighted snippet; the withheld result and the other
    # patient's document never show.
    q = driver.find_element(By.ID, "q")  # type: ignore[attr-defined]
    q.send_keys("hémoglobine")
    driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: _results(d) == ["hb-2024"])
    marks = driver.find_elements(By.CSS_SELECTOR, "#results li mark")  # type: ignore[attr-defined]
    assert [m.text.lower() for m in marks][:1] == ["hémoglobine"]

    # Class and date filters.
    q.clear()
    Select(driver.find_element(By.ID, "class")).select_by_value("prescription")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: _results(d) == ["rx-2025"])
    Select(driver.find_element(By.ID, "class")).select_by_value("")  # type: ignore[attr-defined]
    driver.execute_script("document.getElementById('until').value = '2024-12-31'")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: _results(d) == ["hb-2024"])

    # Open: metadata and text.
    driver.find_element(By.CSS_SELECTOR, "#results li[data-doc-id='hb-2024'] button.open").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: d.find_element(By.ID, "doc").is_displayed())
    assert driver.find_element(By.ID, "doc-title").text == "Bilan sanguin"  # type: ignore[attr-defined]
    assert "plaquettes normales" in driver.find_element(By.ID, "doc-text").text  # type: ignore[attr-defined]

    # Download: the decrypted original bytes land in the download folder.
    driver.find_element(By.CSS_SELECTOR, "#results li[data-doc-id='hb-2024'] button.download").click()  # type: ignore[attr-defined]
    target = driver.downloads / "hb-2024.pdf"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 15
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.exists(), list(driver.downloads.iterdir())  # type: ignore[attr-defined]
    assert target.read_bytes() == b"%PDF-1.4 bilan sanguin hemoglobine"

    # Access history: the professional's search, the page's own reads and download.
    driver.find_element(By.ID, "show-history").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: d.find_element(By.ID, "history").is_displayed())
    rows = driver.find_elements(By.CSS_SELECTOR, "#history-rows tr")  # type: ignore[attr-defined]
    actions = [r.get_attribute("data-action") for r in rows]
    assert actions[0] == "download" and "read" in actions and "search" in actions
    # Roles and motifs in French.
    assert any(
        "Dr Test" in r.text and "professionnel de santé" in r.text and "accès autorisé" in r.text
        for r in rows
    ), [r.text for r in rows]


def test_a_bad_token_shows_an_error_and_no_data(api: Api, browser: object) -> None:
    from selenium.webdriver.common.by import By

    api.file(INS, "hb-2024", text="Hémoglobine 13,5 g/dL")
    driver = browser
    driver.get(f"{api.url}/")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "token").send_keys("not-a-token")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: "invalide" in d.find_element(By.ID, "status").text)
    assert not driver.find_element(By.ID, "main").is_displayed()  # type: ignore[attr-defined]
    assert _results(driver) == []


LAB_TEXT = (
    "Laboratoire du Parc\n12 rue des Lilas, 69000 Lyon\nBilan sanguin\n"
    "Patiente : DURAND Claire\nHémoglobine 11.2 g/dL [12.0-16.5] L\n"
    "Ferritine 45 µg/L [15-150] N"
)
LAB_RESULTS = (
    LabResult(
        analyte="Hémoglobine", value="11.2", unit="g/dL", reference_range="12.0-16.5", abnormal_flag="L"
    ),
    LabResult(analyte="Ferritine", value="45", unit="µg/L", reference_range="15-150", abnormal_flag="N"),
)


def _js(driver: object, script: str) -> object:
    return driver.execute_script(script)  # type: ignore[attr-defined]


def test_the_page_reads_like_a_record_a_patient_can_use(api: Api, browser: object) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    api.file(
        INS,
        "lab-2024",
        title="Bilan sanguin",
        text=LAB_TEXT,
        results=LAB_RESULTS,
        document_date=dt.date(2024, 3, 1),
    )
    api.file(
        INS,
        "rx-2025",
        doc_class=DocClass.PRESCRIPTION,
        title="Ordonnance",
        text="Amoxicilline 1 g matin et soir.",
        document_date=dt.date(2025, 1, 10),
    )
    driver.get(f"{api.url}/?token={api.token(patient(INS))}")  # type: ignore[attr-defined]
    _wait(driver, lambda d: _results(d) == ["rx-2025", "lab-2024"])

    lab = driver.find_element(By.CSS_SELECTOR, "#results li[data-doc-id='lab-2024']")  # type: ignore[attr-defined]
    # No query: the content, brackets as the lab wrote them, nothing highlighted; French date.
    snippet = lab.find_element(By.CSS_SELECTOR, ".snippet")
    assert snippet.text.startswith("Hémoglobine 11.2 g/dL [12.0-16.5] L"), snippet.text
    assert lab.find_elements(By.CSS_SELECTOR, "mark") == []
    assert "1 mars 2024" in lab.find_element(By.CSS_SELECTOR, ".meta").text
    # Accessibility: the search box has a label, buttons say which document, the count is live.
    assert _js(driver, "return document.getElementById('q').labels.length") == 1
    open_button = lab.find_element(By.CSS_SELECTOR, "button.open")
    assert open_button.get_attribute("aria-label") == "Ouvrir « Bilan sanguin » du 1 mars 2024"
    assert _js(driver, "return document.getElementById('total').getAttribute('aria-live')") == "polite"
    assert "2 document(s)" in driver.find_element(By.ID, "total").text  # type: ignore[attr-defined]

    # A query: only the matched word is marked, the reference range stays text.
    q = driver.find_element(By.ID, "q")  # type: ignore[attr-defined]
    q.send_keys("ferritine")
    driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: _results(d) == ["lab-2024"])
    marks = driver.find_elements(By.CSS_SELECTOR, "#results li mark")  # type: ignore[attr-defined]
    assert [m.text for m in marks] == ["Ferritine"]
    assert "[15-150]" in driver.find_element(By.CSS_SELECTOR, "#results .snippet").text  # type: ignore[attr-defined]

    # Open: under its own result, focus on it, results as a table with the low value stressed.
    driver.find_element(By.CSS_SELECTOR, "#results li[data-doc-id='lab-2024'] button.open").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: d.find_element(By.ID, "doc").is_displayed())
    assert _js(driver, "return document.getElementById('doc').closest('li').dataset.docId") == "lab-2024"
    assert _js(driver, "return document.activeElement.id") == "doc-title"
    rows = driver.find_elements(By.CSS_SELECTOR, "#doc-results-rows tr")  # type: ignore[attr-defined]
    assert [r.get_attribute("class") for r in rows] == ["abnormal", ""]
    assert rows[0].find_element(By.CSS_SELECTOR, "strong").text == "11.2"
    assert "bas" in rows[0].text and "normal" in rows[1].text
    assert "1 mars 2024" in driver.find_element(By.ID, "doc-meta").text  # type: ignore[attr-defined]
    # Close: hidden, focus back on the button that opened it.
    driver.find_element(By.ID, "doc-close").click()  # type: ignore[attr-defined]
    assert not driver.find_element(By.ID, "doc").is_displayed()  # type: ignore[attr-defined]
    assert _js(driver, "return document.activeElement.classList.contains('open')") is True
    # A new search clears an opened document.
    driver.find_element(By.CSS_SELECTOR, "#results li[data-doc-id='lab-2024'] button.open").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: d.find_element(By.ID, "doc").is_displayed())
    q.clear()
    driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: _results(d) == ["rx-2025", "lab-2024"])
    assert not driver.find_element(By.ID, "doc").is_displayed()  # type: ignore[attr-defined]


def test_an_expired_token_goes_back_to_the_login_screen(api: Api, browser: object) -> None:
    from selenium.webdriver.common.by import By

    from pipeline.api.auth import issue_token
    from tests.api.conftest import TEST_JWT_KEY

    driver = browser
    api.file(INS, "hb-2024", text="Hémoglobine 13,5 g/dL")
    # The API allows 30 s of clock skew past "exp": this token has 4 s of life left.
    short = issue_token(TEST_JWT_KEY, patient(INS), ttl=dt.timedelta(seconds=-26))
    driver.get(f"{api.url}/?token={short}")  # type: ignore[attr-defined]
    _wait(driver, lambda d: _results(d) == ["hb-2024"])
    time.sleep(5)
    driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
    _wait(driver, lambda d: d.find_element(By.ID, "login").is_displayed())
    assert "expiré" in driver.find_element(By.ID, "status").text  # type: ignore[attr-defined]
    assert not driver.find_element(By.ID, "main").is_displayed()  # type: ignore[attr-defined]
    assert _results(driver) == []
