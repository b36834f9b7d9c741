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
from collections.abc import Iterator, Sequence

import Stemmer

__all__ = ["analyze", "analyze_query", "analyze_words", "fold", "highlight"]

# A LOINC-like code (digits, dash, one check digit) is one token; anything else
# splits on non-word characters. Underscore is not a word character here.
_WORD = re.compile(r"\d{1,6}-\d(?![\d-])|[^\W_]+")
_APOSTROPHES = "'’ʼ"
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
_stem_cache: dict[str, str] = {}
_STEM_CACHE_SIZE = 200_000


def fold(word: str) -> str:
    """Accent-fold and casefold one word (``Hémoglobine`` -> ``hemoglobine``)."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word.translate(_LIGATURES))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _stem_all(words: list[str]) -> list[str]:
    """Stem folded words through a shared cache; codes and numbers are left as they are."""
    stems: dict[str, str] = {}
    missing: list[str] = []
    for word in set(words):
        stem = _stem_cache.get(word)
        if stem is None:
            missing.append(word)
        else:
            stems[word] = stem
    if missing:
        with _stem_lock:
            stemmed = _stemmer.stemWords(missing)
        for word, stem in zip(missing, stemmed, strict=True):
            stems[word] = word if any(c.isdigit() for c in word) else stem
        if len(_stem_cache) + len(missing) > _STEM_CACHE_SIZE:
            _stem_cache.clear()
        _stem_cache.update((w, stems[w]) for w in missing)
    return [stems[w] for w in words]


def _folded_words(text: str, *, query: bool = False) -> Iterator[tuple[int, int, list[str]]]:
    """(start, end, folded sub-words) for each word of ``text``, stop words removed.

    Offsets are in ``text`` itself, which callers pass NFC-normalised so that a
    decomposed accent does not split a word. With ``query``, capitalised operators
    are skipped too.
    """
    for match in _WORD.finditer(text):
        word = match.group()
        start, end = match.span()
        if end < len(text) and text[end] in _APOSTROPHES and word.lower() in _ELIDED:
            continue
        if query and word in _OPERATORS:
            continue
        folded = fold(word)
        # Folding may turn one word into several (e.g. ``½`` -> ``1⁄2``).
        parts = [folded] if _WORD.fullmatch(folded) else _WORD.findall(folded)
        parts = [p for p in parts if p not in _STOP_WORDS]
        if parts:
            yield start, end, parts


def analyze_words(text: str) -> list[tuple[int, int, list[str]]]:
    """Each kept word of ``text`` with its span and its tokens (for highlighting).

    ``text`` must already be NFC-normalised for the spans to index it.
    """
    words = list(_folded_words(text))
    flat = _stem_all([p for _, _, parts in words for p in parts])
    out: list[tuple[int, int, list[str]]] = []
    i = 0
    for start, end, parts in words:
        out.append((start, end, flat[i : i + len(parts)]))
        i += len(parts)
    return out


def analyze(text: str) -> list[str]:
    """The index tokens of ``text``, in order (duplicates kept, for term frequency)."""
    text = unicodedata.normalize("NFC", text)
    return _stem_all([p for _, _, parts in _folded_words(text) for p in parts])


def analyze_query(text: str) -> list[str]:
    """The distinct tokens of free text typed by a user, in the order typed.

    Only word characters survive tokenisation, so quotes, ``*``, ``:``, parentheses
    and the like never reach a backend's query syntax; capitalised operators
    (``AND``, ``OR``, ``NOT``, ``NEAR``) are dropped. Backends must still quote
    every term.
    """
    text = unicodedata.normalize("NFC", text)
    words: list[str] = []
    for _, _, parts in _folded_words(text, query=True):
        words.extend(parts)
        if len(words) >= MAX_QUERY_TERMS * 4:
            break
    distinct = list(dict.fromkeys(_stem_all(words)))
    return distinct[:MAX_QUERY_TERMS]


def highlight(text: str, tokens: Sequence[str], prefix: str | None = None) -> str:
    """About ``SNIPPET_CHARS`` of ``text`` around its first word matching ``tokens``
    (or starting with ``prefix``), each matching word wrapped in ``[`` ``]``.

    The excerpt is of the original text (whitespace collapsed), so ``Hémoglobines``
    is shown as typed by the producer while matching the query ``hemoglobine``.
    Without a match, the start of the text.
    """
    text = " ".join(unicodedata.normalize("NFC", text).split())
    wanted = set(tokens)

    def matches(word_tokens: list[str]) -> bool:
        return any(t in wanted or (prefix is not None and t.startswith(prefix)) for t in word_tokens)

    words = analyze_words(text) if wanted else []
    first = next((start for start, _, toks in words if matches(toks)), None)
    begin = 0 if first is None else max(0, first - SNIPPET_CHARS // 3)
    if begin:
        space = text.find(" ", begin, first)
        begin = space + 1 if space != -1 else begin
    end = min(len(text), begin + SNIPPET_CHARS)
    if end < len(text):
        space = text.rfind(" ", begin, end)
        end = space if space > begin else end
    pieces: list[str] = ["…"] if begin else []
    cursor = begin
    for start, stop, toks in words:
        if start < begin or stop > end or not matches(toks):
            continue
        pieces += [text[cursor:start], "[", text[start:stop], "]"]
        cursor = stop
    pieces.append(text[cursor:end])
    if end < len(text):
        pieces.append("…")
    return "".join(pieces)
