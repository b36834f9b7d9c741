"""French text analysis shared by every index backend.

Both backends index the output of :func:`analyze` (SQLite FTS5 in its token
columns, Elasticsearch in a whitespace-analysed field) and search with
:func:`analyze_query`, so accent folding, stemming and stop words never diverge
between them.

A token is: the word NFKD-folded (accents dropped, ``œ``/``æ`` spelled out),
casefolded, then stemmed with the snowball French stemmer, so ``Hémoglobines``,
``hemoglobine`` and ``HEMOGLOBINES`` all give ``hemoglobin``. LOINC-style codes
(``718-7``, ``2160-0``) stay one token; other numbers are kept as digits. Elided
articles (``l'``, ``d'``, ``qu'``…) and a short list of stop words are left out.
Tokens only ever hold ``[^\\W_]`` characters and, for codes, ``-``.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence

import Stemmer

__all__ = ["analyze", "analyze_query", "analyze_words", "excerpt", "fold", "highlight", "mark"]

# A LOINC-like code (digits, dash, one check digit) is one token; anything else
# splits on non-word characters. Underscore is not a word character here.
_WORD = re.compile(r"\d{1,6}-\d(?![\d-])|[^\W_]+")
_APOSTROPHES = "'’ʼ"
# The same words, each with the apostrophe that follows it, if any (``ʼ`` is a word
# character, so only ``'`` and ``’`` can follow a word): ``analyze`` needs no offsets,
# and ``findall`` is quicker than a loop over match objects.
_WORD_AND_APOSTROPHE = re.compile(r"(\d{1,6}-\d(?![\d-])|[^\W_]+)(['’]?)")
_ELIDED = frozenset({"l", "d", "j", "m", "n", "s", "t", "c", "qu", "jusqu", "lorsqu", "puisqu"})
_STOP_WORDS = frozenset(
    """
    a au aux avec ce ces cet cette dans de des du elle elles en est et il ils la le les
    leur leurs ou par pour qui que sa se ses son sont sur un une y
    """.split()
)
# Words that are FTS5 / Lucene operators when typed in capitals: dropped from queries.
_OPERATORS = frozenset({"AND", "OR", "NOT", "NEAR"})
_LIGATURES = str.maketrans({"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae"})
# Queries longer than this many terms are cut: no one types more, and it bounds the work.
MAX_QUERY_TERMS = 32
SNIPPET_CHARS = 160

_stemmer = Stemmer.Stemmer("french")
_stem_lock = threading.Lock()  # a Stemmer object is not safe to share between threads
# Raw word as written -> its tokens: most words recur, so analysis is mostly lookups.
_word_cache: dict[str, tuple[str, ...]] = {}
_WORD_CACHE_SIZE = 200_000


def fold(word: str) -> str:
    """Accent-fold and casefold a word or a text (``Hémoglobine`` -> ``hemoglobine``,
    ``Œdème`` -> ``oedeme``): the one fold, for search terms, classification keywords,
    dates and analyte names alike, so a ligature never matches in one place only."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word.translate(_LIGATURES))
    # The marks among the text's distinct characters, dropped in one ``translate``: a
    # text has a few dozen distinct characters, and thousands of characters.
    marks = {ord(c): None for c in set(decomposed) if unicodedata.combining(c)}
    return decomposed.translate(marks).casefold()


def _stem_all(folded: list[str]) -> dict[str, str]:
    """Stems of folded words; codes and numbers are left as they are."""
    unique = list(set(folded))
    # The snowball stemmer treats some plurals apart from their singular ("scanners" ->
    # "scanner" but "scanner" -> "scann"): drop a plural -s first so both meet.
    singular = [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in unique]
    with _stem_lock:
        stems = _stemmer.stemWords(singular)
    return {
        word: word if any(c.isdigit() for c in word) else stem
        for word, stem in zip(unique, stems, strict=True)
    }


def _tokens_of_words(words: list[str]) -> list[tuple[str, ...]]:
    """The tokens of each raw word: folded, stop words out, stemmed (cached)."""
    known: dict[str, tuple[str, ...]] = {}
    missing: list[str] = []
    for word in set(words):
        tokens = _word_cache.get(word)
        if tokens is None:
            missing.append(word)
        else:
            known[word] = tokens
    if missing:
        parts_of: dict[str, list[str]] = {}
        for word in missing:
            folded = fold(word)
            # Folding may turn one word into several (e.g. ``½`` -> ``1⁄2``).
            parts = [folded] if _WORD.fullmatch(folded) else _WORD.findall(folded)
            parts_of[word] = [p for p in parts if p not in _STOP_WORDS]
        stems = _stem_all([p for parts in parts_of.values() for p in parts])
        for word, parts in parts_of.items():
            known[word] = tuple(stems[p] for p in parts)
        if len(_word_cache) + len(missing) > _WORD_CACHE_SIZE:
            _word_cache.clear()
        _word_cache.update((w, known[w]) for w in missing)
    return [known[w] for w in words]


def _spans(text: str, *, query: bool = False, limit: int | None = None) -> list[tuple[int, int, str]]:
    """(start, end, word) of the words of ``text``, elided articles skipped.

    Offsets are in ``text`` itself, which callers pass NFC-normalised so that a
    decomposed accent does not split a word. With ``query``, capitalised operators
    are skipped too; ``limit`` stops after that many words.
    """
    spans: list[tuple[int, int, str]] = []
    for match in _WORD.finditer(text):
        word = match.group()
        start, end = match.span()
        if end < len(text) and text[end] in _APOSTROPHES and word.lower() in _ELIDED:
            continue
        if query and word in _OPERATORS:
            continue
        spans.append((start, end, word))
        if limit is not None and len(spans) >= limit:
            break
    return spans


def analyze_words(text: str) -> list[tuple[int, int, tuple[str, ...]]]:
    """Each kept word of ``text`` with its span and its tokens (for highlighting).

    ``text`` must already be NFC-normalised for the spans to index it.
    """
    spans = _spans(text)
    tokens = _tokens_of_words([w for _, _, w in spans])
    return [(s, e, t) for (s, e, _), t in zip(spans, tokens, strict=True) if t]


def _words(text: str) -> list[str]:
    """The words of ``text`` that :func:`_spans` keeps, without their offsets."""
    return [
        word
        for word, apostrophe in _WORD_AND_APOSTROPHE.findall(text)
        if not apostrophe or word.lower() not in _ELIDED
    ]


def analyze(text: str) -> list[str]:
    """The index tokens of ``text``, in order (duplicates kept, for term frequency)."""
    words = _words(unicodedata.normalize("NFC", text))
    return [t for tokens in _tokens_of_words(words) for t in tokens]


def analyze_query(text: str) -> list[str]:
    """The distinct tokens of free text typed by a user, in the order typed.

    Only word characters survive tokenisation, so quotes, ``*``, ``:``, parentheses
    and the like never reach a backend's query syntax; capitalised operators
    (``AND``, ``OR``, ``NOT``, ``NEAR``) are dropped. Backends must still quote
    every term. At most ``MAX_QUERY_TERMS`` tokens are kept.
    """
    spans = _spans(unicodedata.normalize("NFC", text), query=True, limit=MAX_QUERY_TERMS * 8)
    tokens = [t for ts in _tokens_of_words([w for _, _, w in spans]) for t in ts]
    return list(dict.fromkeys(tokens))[:MAX_QUERY_TERMS]


# Lines at the top of a document that say who it is about, not what it says.
_IDENTITY_LINE = re.compile(
    r"^\s*(?:patient(?:e)?|n[ée]+\(?e?\)?\s+le|date de naissance|ins|nir|n°\s*ss|ipp)\b", re.IGNORECASE
)


def _body_start(text: str, title: str | None) -> int:
    """Where a document's content starts, past its letterhead (lines up to the title) and
    the lines naming the patient: what a snippet shows when nothing was searched."""
    lines = text.splitlines(keepends=True)
    head = [line.strip() for line in lines[:8]]
    start = head.index(title.strip()) + 1 if title and title.strip() in head else 0
    while start < len(lines) and (not lines[start].strip() or _IDENTITY_LINE.match(lines[start])):
        start += 1
    if start >= len(lines):
        return 0
    return sum(len(line) for line in lines[:start])


def excerpt(
    text: str, tokens: Sequence[str], prefix: str | None = None, *, title: str | None = None
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """About ``SNIPPET_CHARS`` of ``text`` around its first word matching ``tokens`` (or
    starting with ``prefix``), and the (start, end) offsets of each matching word in it.

    The excerpt is the original text (whitespace collapsed), so ``Hémoglobines`` is shown
    as typed by the producer while matching the query ``hemoglobine``; brackets or other
    marks in the text stay text. Without a match, the start of the document's content
    (past the letterhead and the patient's identity lines when ``title`` is given).
    """
    text = unicodedata.normalize("NFC", text)
    wanted = set(tokens)
    if not wanted and prefix is None:
        text = text[_body_start(text, title) :]
    text = " ".join(text.split())

    def matches(word_tokens: tuple[str, ...]) -> bool:
        return any(t in wanted or (prefix is not None and t.startswith(prefix)) for t in word_tokens)

    words = analyze_words(text) if wanted or prefix else []
    first = next((start for start, _, toks in words if matches(toks)), None)
    begin = 0 if first is None else max(0, first - SNIPPET_CHARS // 3)
    if begin:
        space = text.find(" ", begin, first)
        begin = space + 1 if space != -1 else begin
    end = min(len(text), begin + SNIPPET_CHARS)
    if end < len(text):
        space = text.rfind(" ", begin, end)
        end = space if space > begin else end
    lead = "…" if begin else ""
    spans = tuple(
        (start - begin + len(lead), stop - begin + len(lead))
        for start, stop, toks in words
        if start >= begin and stop <= end and matches(toks)
    )
    return lead + text[begin:end] + ("…" if end < len(text) else ""), spans


def highlight(text: str, tokens: Sequence[str], prefix: str | None = None) -> str:
    """``excerpt`` with each matching word wrapped in ``[`` ``]`` (for a terminal)."""
    snippet, spans = excerpt(text, tokens, prefix)
    return mark(snippet, spans)


def mark(snippet: str, spans: Sequence[tuple[int, int]], left: str = "[", right: str = "]") -> str:
    pieces, cursor = [], 0
    for start, stop in spans:
        pieces += [snippet[cursor:start], left, snippet[start:stop], right]
        cursor = stop
    pieces.append(snippet[cursor:])
    return "".join(pieces)
