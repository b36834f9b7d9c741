"""French analysis shared by the index backends: folding, stemming, codes, query safety."""

from __future__ import annotations

import pytest

from pipeline.analysis import MAX_QUERY_TERMS, analyze, analyze_query, analyze_words, highlight


@pytest.mark.parametrize(
    "word", ["hémoglobine", "hemoglobine", "Hémoglobines", "HEMOGLOBINES", "He\u0301moglobine"]
)
def test_accents_case_and_plural_give_one_token(word: str) -> None:
    assert analyze(word) == ["hemoglobin"]


def test_ligatures_and_accented_capitals_fold() -> None:
    assert analyze("Œdème") == analyze("oedeme")
    assert analyze("CRÉATININE") == analyze("creatinine") == ["creatinin"]


def test_loinc_codes_stay_whole_and_numbers_are_kept() -> None:
    assert analyze("Hémoglobine (718-7) 13,5 g/dL ; créatinine 2160-0") == [
        "hemoglobin",
        "718-7",
        "13",
        "5",
        "g",
        "dl",
        "creatinin",
        "2160-0",
    ]
    # A date is not a code: its parts stay searchable.
    assert analyze("2024-01-15") == ["2024", "01", "15"]


def test_stop_words_and_elisions_are_left_out() -> None:
    assert analyze("le taux de l'hémoglobine et d'hématocrite à jeun") == [
        "taux",
        "hemoglobin",
        "hematocrit",
        "jeun",
    ]
    assert analyze("la le les des du") == []
    # A letter is only an elision before an apostrophe: vitamin D keeps its D.
    assert analyze("Vitamine D") == ["vitamin", "d"]


def test_underscore_and_punctuation_split_words() -> None:
    assert analyze("glucose_sanguin/HbA1c") == ["glucos", "sanguin", "hba1c"]


def test_query_gives_the_same_tokens_as_the_index() -> None:
    text = "Hémoglobines glyquées HbA1c 4548-4"
    assert analyze_query(text) == analyze(text)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ('pat:"p1"* OR NEAR(hémoglobine, 5)', ["pat", "p1", "hemoglobin", "5"]),
        ("(créatinine) AND NOT glucose*", ["creatinin", "glucos"]),
        ('"""***:::((()))', []),
        ("", []),
        ("le la les", []),
        ("\x00\ud800🧪", []),
    ],
)
def test_query_drops_syntax_and_operators(text: str, tokens: list[str]) -> None:
    assert analyze_query(text) == tokens


def test_query_tokens_hold_only_word_characters() -> None:
    junk = "".join(chr(c) for c in range(32, 0x3000, 7))
    for token in analyze_query(junk):
        assert all(c.isalnum() or c == "-" for c in token), token


def test_query_dedupes_and_caps_terms() -> None:
    assert analyze_query("glucose Glucose GLUCOSES") == ["glucos"]
    many = analyze_query(" ".join(f"mot{i}" for i in range(5000)))
    assert len(many) == MAX_QUERY_TERMS


def test_analyze_words_gives_spans_in_the_original_text() -> None:
    text = "Taux d'Hémoglobine normal"
    spans = analyze_words(text)
    assert [(text[s:e], toks) for s, e, toks in spans] == [
        ("Taux", ("taux",)),
        ("Hémoglobine", ("hemoglobin",)),
        ("normal", ("normal",)),
    ]


def test_highlight_wraps_matching_original_words() -> None:
    text = "Intro. " * 40 + "Hémoglobines 13 g/dL et hémoglobine glyquée. " + "Fin. " * 40
    snippet = highlight(text, analyze_query("hemoglobine"))
    assert snippet.count("[Hémoglobines]") == 1 and "[hémoglobine]" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")
    assert len(snippet) <= 170


def test_highlight_prefix_and_no_match() -> None:
    assert "[Hématocrite]" in highlight("Hématocrite 41 %", [], prefix="hemato")
    assert highlight("Radio du thorax", ["glucos"]) == "Radio du thorax"


def test_plural_and_singular_meet_even_where_snowball_splits_them() -> None:
    from pipeline.analysis import analyze

    assert analyze("scanner") == analyze("SCANNERS") == analyze("Scanners")
    assert analyze("examen") == analyze("examens")
