"""Text helpers shared by the lexical and the vector side of retrieval.

Interface:

- :data:`STOP_WORDS` -- English function words that carry no topic (used by
  :func:`fts_query` and by :class:`vmem.embed.HashEmbedder`).
- :func:`tokenize` -- lower-cased word tokens, split the way SQLite FTS5's
  ``unicode61`` tokenizer splits (runs of letters and digits).
- :func:`fts_query` -- a safe FTS5 ``MATCH`` expression for a free-text question.
- :func:`clean_text` -- text made storable as UTF-8 (a lone surrogate becomes U+FFFD).
- :func:`stem`, :func:`index_terms`, :func:`query_terms` -- the analysis behind the
  stores' own inverted index (:mod:`vmem._textindex`): FTS5's ``porter unicode61``
  rules in Python, so that the index matches what FTS5 matched.

Why quoting makes :func:`fts_query` safe: in FTS5 query syntax everything
between double quotes is a *string*, handed to the table's tokenizer and never
parsed as an operator (``AND``, ``OR``, ``NOT``, ``NEAR``, ``*``, ``^``, ``:``,
parentheses, column filters). The terms are themselves runs of letters and
digits, so they contain no double quote to escape; the only syntax in the
result is the quotes and the ``OR`` between them.
"""

from __future__ import annotations

import re
import unicodedata

import Stemmer

__all__ = [
    "STOP_WORDS", "MAX_QUERY_TERMS", "ANALYZER", "clean_text", "tokenize", "content_terms",
    "fts_query", "stem", "index_terms", "query_terms",
]

#: Terms kept in one MATCH expression at most: a pasted document must not turn
#: into a query with thousands of OR branches.
MAX_QUERY_TERMS = 64

# English function words: articles, pronouns, auxiliaries, prepositions,
# conjunctions, question words and contraction fragments ("don't" tokenizes to
# "don" + "t"). Content words, even very frequent ones ("like", "go", "time"),
# are deliberately absent: a question about "time" must be able to find it.
STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above after again against all am an and any are aren as at be because been
    before being below between both but by can cannot could couldn d did didn do does
    doesn doing don down during each few for from further had hadn has hasn have haven
    having he her here hers herself him himself his how i if in into is isn it its
    itself just ll m me might more most mustn my myself no nor not now o of off on once
    only or other ought our ours ourselves out over own re s same shan she should shouldn
    so some such t than that the their theirs them themselves then there these they this
    those through to too under until up ve very was wasn we were weren what when where
    which while who whom whose why will with won would wouldn y you your yours yourself
    yourselves also yet may shall must let lets whether
    """.split()
)

# FTS5's unicode61 treats letters (L*), numbers (N*) and private-use (Co)
# characters as token characters and everything else as a separator. Python's
# [^\W_] is letters and digits (underscore is a separator for FTS5 too).
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _fold(text: str) -> str:
    """Lower-case and strip diacritics, as unicode61 does by default."""
    text = text.lower()
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFD", text)  # canonical only: unicode61 keeps "²" and "ﬁ"
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-cased, diacritic-folded word tokens.

    Tokens are maximal runs of letters and digits, so ``"don't"`` gives
    ``["don", "t"]`` and ``"e-mail"`` gives ``["e", "mail"]``, matching how the
    FTS5 ``unicode61`` tokenizer splits the stored text.
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize: expected str, got {type(text).__name__}")
    return _WORD.findall(_fold(text))


def content_terms(text: str, *, limit: int = MAX_QUERY_TERMS) -> list[str]:
    """Distinct non-stop-word tokens of ``text`` in first-seen order (at most ``limit``).

    When every token is a stop word (``"Who is he?"``) the stop words themselves
    are returned, so that such a text still searches for something.
    """
    tokens = tokenize(text)
    kept = [t for t in tokens if t not in STOP_WORDS] or tokens
    return list(dict.fromkeys(kept))[:limit]


def fts_query(text: str) -> str | None:
    """Turn free text into a safe SQLite FTS5 ``MATCH`` expression, or ``None``.

    The text is tokenized (:func:`tokenize`), English stop words are dropped
    (unless nothing else is left), duplicates are removed, each term is quoted
    and the terms are joined with ``OR``: a row matches when it contains any
    term, and FTS5's ``bm25()`` ranks rows by how many rare terms they share.
    Stemming is left to the table's tokenizer (``tokenize='porter unicode61'``),
    which stems the quoted terms exactly as it stemmed the stored text.

    Returns ``None`` when the text has no searchable term (empty, punctuation
    only, or not a string); never raises::

        >>> fts_query('When did Caroline go to the "LGBTQ" support-group?')
        '"caroline" OR "go" OR "lgbtq" OR "support" OR "group"'
    """
    if not isinstance(text, str):
        return None
    try:
        terms = content_terms(text)
    except Exception:  # defensive: a query helper must never take a search down
        return None
    if not terms:
        return None
    return " OR ".join(f'"{t}"' for t in terms)


def clean_text(text: str) -> str:
    """``text`` storable as UTF-8: a lone surrogate (a model's JSON can carry one as an escape)
    becomes U+FFFD; everything else is kept as it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


#: Names the analysis below; an index built by another analysis is rebuilt.
ANALYZER = "unicode61+porter/v1"

_PORTER = Stemmer.Stemmer("porter")
_PORTER.maxCacheSize = 1 << 16
_STEMS: dict[str, str] = {}


def stem(token: str) -> str:
    """Porter stem of a folded token, as FTS5's ``porter`` tokenizer stems.

    FTS5 leaves tokens shorter than 3 or longer than 64 characters alone, and so
    does this. The stemmer is Snowball's original Porter (PyStemmer, C); it
    differs from FTS5's on 5 of the 5,058 distinct LoCoMo words ("psychology":
    "psychologi" here, "psycholog" in FTS5), which only matters if both are mixed.
    """
    s = _STEMS.get(token)
    if s is None:
        s = token if not 3 <= len(token) <= 64 else _PORTER.stemWord(token)
        if len(_STEMS) > 1 << 18:
            _STEMS.clear()
        _STEMS[token] = s
    return s


def index_terms(text: str) -> dict[str, int]:
    """Stemmed term -> frequency over every token of ``text`` (stop words too, as FTS5
    indexes them); the document's length is the sum of the frequencies."""
    out: dict[str, int] = {}
    get = _STEMS.get
    for tok in _WORD.findall(_fold(text)):
        s = get(tok)
        if s is None:
            s = stem(tok)
        out[s] = out.get(s, 0) + 1
    return out


def query_terms(text: str) -> list[str]:
    """The stemmed search terms of a free-text question: the terms :func:`fts_query`
    would quote, stemmed as the index stems (empty when none). Two words with one
    stem ("go", "going") give it twice, and FTS5 scores such a stem twice."""
    if not isinstance(text, str):
        return []
    return [stem(t) for t in content_terms(text)]
