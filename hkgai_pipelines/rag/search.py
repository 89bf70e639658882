"""Question search across scripts and languages: what `hkgai ask` retrieves, cites and
judges "found".

A question may be written in English, Cantonese, Traditional or Simplified Chinese, and the
document that answers it may be in English, Cantonese or Traditional Chinese. The store's own
hybrid query (`VectorStore.query`) sees only the question as typed (a Simplified question
shares few character n-grams with Traditional text), and it rescales its BM25 and vector
scores per query, so its scores rank passages against each other but do not say whether any
of them is about the question. `QuestionSearch` works on top of any `VectorStore`:

1. **Both scripts** (`question_forms`). The question is searched as typed and folded to Hong
   Kong Traditional (OpenCC `s2hk`, the script of the Chinese documents), on the keyword and
   on the vector side.
2. **Candidates** from the store's vector search and keyword (BM25) search, `candidates`
   chunks each, per form; their union is scored with evidence that means the same for every
   question and every store:
3. **Evidence per chunk** (`ScoredHit`). `vector`: cosine similarity between the question
   (its best form) and the chunk, from the embedder the index was built with. `keyword`: the
   IDF-weighted share of the question's terms found in the chunk (`question_terms`,
   `keyword_coverage`), compared in one script (both sides through OpenCC t2s, so `點樣`
   meets `点样` and 麵 meets 麪). `relevance = alpha * vector + (1 - alpha) * keyword`, with
   the hybrid weight of params.yaml (rag.alpha: 1 = vector only, 0 = keyword only). Keyword
   evidence counts only where the passage's language could share the question's words: an
   English question and a Chinese passage cannot, so there the relevance is the cosine alone,
   and a passage is not marked down for being in another language.
4. **Across languages** (`_bridge`). The multilingual embedder lets an English question find
   Chinese passages and the reverse, but its cosine for a translated name is weak ("What is
   the Octopus card?" scores 0.14 against the Cantonese 八達通 document). So each of the best
   `bridge_sources` passages in the question's language is added to the question as one query
   (Rocchio's pseudo-relevance feedback: `normalise(question + passage)`), and passages in
   other languages near it get that cosine as `bridge` evidence, never more than the source
   passage's own relevance: a counterpart ranks after what it was found from.
5. **Documents** (`DocumentScore`): a document's relevance is its best chunk's, or its
   retrieved chunks taken together (their keyword coverage as one text, their best cosine)
   when that is higher, so a question whose terms sit in two chunks of one document is
   covered by it. Documents are returned by descending `score`: the relevance plus a
   preference for the question's language of at most `language_margin` (`LANGUAGE_MARGIN`),
   which can move a document only past documents that are comparably relevant.
6. **Found** (`SearchResult.found`) on either kind of evidence, over each document's chunks:
   words and meaning together (the best document's relevance reaches `min_relevance`, with a
   cosine of at least `min_cosine`), or meaning alone when it is strong (a document's cosine
   reaches `strong_cosine`: a paraphrase in the question's own language shares few words).
   `MIN_RELEVANCE`, `MIN_COSINE` and `STRONG_COSINE` say where the values come from.

`benchmarks/retrieval_eval.py` measures this against the store's plain hybrid query.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from hkgai_pipelines.rag.embedders import Embedder
from hkgai_pipelines.rag.store import SearchHit, VectorStore

#: The preference for a document in the question's language, as a score bonus (`language_bonus`:
#: the question's first-choice language gets all of it, the second choice half, the third a
#: quarter, others none). What "comparably relevant" means: with the default alpha, relevance is
#: 0.5 * cosine + 0.5 * keyword coverage, so 0.05 is one matched term in ten, or 0.1 of cosine.
#: A document in the question's language goes first only over a document at most that much
#: more relevant; a larger lead says the other-language document is the better answer.
LANGUAGE_MARGIN = 0.05

#: The least relevance of the best document for a question to count as answered (with
#: MIN_COSINE; STRONG_COSINE is the other way to count). Set on hkgai_pipelines/data/
#: rag_questions.yaml (43 answerable questions: the lowest best-document relevance is 0.355,
#: "When did the Basic Law come into effect?") and the 15 `calibration_unanswerable` questions
#: of benchmarks/data/retrieval_questions.yaml (off-topic: at most 0.285, "上海有什么好吃的？",
#: besides "What is the speed of light?" at 0.369, matched by words alone, which MIN_COSINE
#: stops). 0.3 sits between the two, nearer the off-topic side so that a weakly worded
#: answerable question is still answered. `benchmarks/retrieval_eval.py --calibrate` prints
#: these figures.
MIN_RELEVANCE = 0.3

#: The least cosine of the best document: words alone are not evidence when the embedder finds
#: the passage unrelated ("What is the speed of light?" matches "High Speed Rail ... Light
#: Rail" by words, at cosine 0.11). The lowest cosine of a rag_questions.yaml best document is
#: 0.26 ("When was the Sino-British Joint Declaration signed?"); unrelated pairs sit around
#: 0.0-0.2 for USE v3 (params.yaml rag.min_answer_similarity).
MIN_COSINE = 0.15

#: A document this similar to the question (cosine) answers it whatever the words: USE v3
#: gives paraphrases about 0.5 and more. Set above the highest cosine any
#: `calibration_unanswerable` question reaches (0.313, 邊度買到平機票去台灣？); every
#: rag_questions.yaml question is found by relevance already.
STRONG_COSINE = 0.35

#: Which passage languages suit a question in each language, best first (a Simplified Chinese
#: question is best answered from Traditional text, converted for the reply).
ANSWER_LANGUAGES = {
    "yue": ("yue", "zh-hant", "mixed"),
    "mixed": ("yue", "mixed", "zh-hant"),
    "zh-hant": ("zh-hant", "yue"),
    "zh-hans": ("zh-hant", "yue"),
    "en": ("en",),
}

#: Passage languages written in Chinese characters (keyword evidence for Chinese terms).
CHINESE_LANGUAGES = ("yue", "zh-hant", "zh-hans")

_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]+")
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

#: English words that carry no topic: question words, auxiliaries, pronouns, prepositions. A
#: short list written for questions (scikit-learn's 318-word list costs seconds to import).
ENGLISH_STOP_WORDS = frozenset(
    """a an the and or but if of to in on at by for from with about into over after before
    between under as is are was were be been being am do does did done doing have has had
    having can could may might must shall should will would what which who whom whose when
    where why how i me my we our you your he him his she her it its they them their this that
    these those there here not no yes any some all each every much many more most than then
    so such very too also just only own same other get got go goes going s t""".split()
)

#: Chinese characters that carry no topic on their own: question words, particles, pronouns
#: and copulas of Cantonese and Standard Written Chinese, in Simplified form (terms are
#: compared after OpenCC t2s). A bigram made only of these (点样, 几时, 甚么, 系咪) is not a
#: term; a bigram with one topic character is.
CHINESE_FUNCTION_CHARACTERS = frozenset(
    "的了是系嘅咩乜点样甚么什哪边几多少何时吗呢㗎啊呀嘛喇啦咗紧过吓我你佢他她它们哋在喺和同与及或"
    "怎为会去就都也要可以有无冇唔不没请问一个啲呢度里嗰这那之其而且即些"
)


@lru_cache(maxsize=1)
def _converters():
    import opencc

    return opencc.OpenCC("s2hk"), opencc.OpenCC("t2s")


def to_hk_traditional(text: str) -> str:
    """`text` in Hong Kong Traditional characters (OpenCC s2hk); Traditional Chinese and
    English come back unchanged."""
    return _converters()[0].convert(text)


def question_forms(question: str) -> list[str]:
    """The question as typed, then folded to Hong Kong Traditional when that differs:
    `["八达通点样增值", "八達通點樣增值"]`, `["What is the Octopus card?"]`."""
    folded = to_hk_traditional(question)
    return [question] if folded == question else [question, folded]


def _comparable(text: str) -> str:
    """The one form keyword evidence is compared in: NFKC, lower case, Simplified characters
    (OpenCC t2s)."""
    return _converters()[1].convert(unicodedata.normalize("NFKC", text).lower())


def _fold_word(word: str) -> str:
    """A light English stemmer, enough for questions and passages to meet: "renewing",
    "renewed", "renews" and "renew" all give "renew", "holidays" gives "holiday", "replacing"
    and "replace" give "replac"; "octopus", "class" and "basis" keep their s, and "mooncakes"
    ("mooncak") does not meet "moon". (No stemmer ships with the project's dependencies.)"""
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-2] if word.endswith(("ches", "shes", "xes", "sses")) else word[:-1]
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def _content_words(text: str) -> list[str]:
    """The English words of comparable `text`, stop words left out, plurals folded."""
    return [_fold_word(w) for w in _WORD_RE.findall(text) if w not in ENGLISH_STOP_WORDS and (len(w) > 1 or w.isdigit())]


def question_terms(question: str) -> list[str]:
    """The terms keyword evidence looks for, in comparable form, distinct, in order:

    * English content words, and each pair of neighbouring content words as a phrase
      (`"octopus card"`): words found apart ("High Speed Rail ... Light Rail") are weaker
      evidence for "the speed of light" than the phrase;
    * the character bigrams of each run of Chinese characters (a run of one character is its
      own term), leaving out bigrams made only of `CHINESE_FUNCTION_CHARACTERS`.

    `question_terms("What is the Octopus card?") == ["octopus", "card", "octopus card"]`."""
    text = _comparable(question)
    words = _content_words(text)
    terms = words + [f"{first} {second}" for first, second in zip(words, words[1:])]
    for run in _HAN_RE.findall(text):
        grams = [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]
        terms.extend(g for g in grams if not all(c in CHINESE_FUNCTION_CHARACTERS for c in g))
    return list(dict.fromkeys(terms))


class PassageTerms:
    """A passage as question terms are looked up in it: English terms against its content
    words (whole words and phrases), Chinese bigrams against its comparable text."""

    def __init__(self, passage: str) -> None:
        self.text = _comparable(passage)
        self.words = " " + " ".join(_content_words(self.text)) + " "

    def __contains__(self, term: str) -> bool:
        return f" {term} " in self.words if term.isascii() else term in self.text


def term_weights(terms: Sequence[str], passages: Sequence[str]) -> dict[str, float]:
    """Each term's IDF over `passages`, smoothed as scikit-learn's TfidfVectorizer does:
    `ln((1 + n) / (1 + df)) + 1`. Computed over the retrieved candidates, not the whole index
    (which would mean reading every chunk per question): a term in most candidates ("Hong
    Kong", 香港) weighs about 1, a term in one of fifty about 4."""
    found = [PassageTerms(p) for p in passages]
    n = len(found)
    return {t: math.log((1 + n) / (1 + sum(t in passage for passage in found))) + 1.0 for t in terms}


def keyword_coverage(terms: Sequence[str], passage: str, weights: dict[str, float] | None = None) -> float:
    """The share of `terms` found in `passage`, each term counted with its weight (1 when
    `weights` has none), 0.0-1.0; 0.0 when there are no terms."""
    if not terms:
        return 0.0
    weights = weights or {}
    found = PassageTerms(passage)
    total = sum(weights.get(t, 1.0) for t in terms)
    return sum(weights.get(t, 1.0) for t in terms if t in found) / total


def language_bonus(passage_lang: str, question_lang: str, margin: float = LANGUAGE_MARGIN) -> float:
    """The score a document in `passage_lang` gets on top of its relevance for a question in
    `question_lang`: `margin` for the question's first-choice language (ANSWER_LANGUAGES), half
    of it for the second choice, a quarter for the third, 0.0 for any other."""
    preferred = ANSWER_LANGUAGES.get(question_lang, (question_lang,))
    return margin / 2 ** preferred.index(passage_lang) if passage_lang in preferred else 0.0


def applicable_terms(terms: Sequence[str], passage_lang: str) -> list[str]:
    """The terms a passage in `passage_lang` could contain: English terms for English
    passages, Chinese terms for Chinese ones, all for `mixed` (or an unknown language)."""
    if passage_lang == "en":
        return [t for t in terms if t.isascii()]
    if passage_lang in CHINESE_LANGUAGES:
        return [t for t in terms if not t.isascii()]
    return list(terms)


@dataclass(frozen=True)
class ScoredHit:
    """A retrieved chunk and its evidence (module docstring, steps 3-4)."""

    hit: SearchHit
    #: Cosine similarity between the question (its best form) and the chunk.
    vector: float
    #: IDF-weighted share of the applicable question terms found in the chunk.
    keyword: float
    #: False when no question term could occur in the chunk's language: relevance is `vector`.
    keyword_applies: bool
    #: Evidence as the counterpart of a passage in the question's language (step 4); 0.0 when
    #: the chunk was not reached that way.
    bridge: float = 0.0
    alpha: float = 0.5

    @property
    def direct(self) -> float:
        """Relevance from the question alone."""
        if not self.keyword_applies:
            return self.vector
        return self.alpha * self.vector + (1.0 - self.alpha) * self.keyword

    @property
    def relevance(self) -> float:
        return max(self.direct, self.bridge)


@dataclass(frozen=True)
class DocumentScore:
    """One document's evidence (module docstring, step 5)."""

    doc_id: str
    lang: str
    #: The best chunk's relevance, or all retrieved chunks' together when higher, 0.0-1.0.
    relevance: float
    #: The best cosine among the document's retrieved chunks.
    vector: float
    #: Keyword coverage of the question by the document's retrieved chunks together.
    keyword: float
    #: relevance + the language preference (at most LANGUAGE_MARGIN): the order of citations.
    score: float
    #: The document's retrieved chunks, most relevant first.
    chunks: tuple[ScoredHit, ...]


@dataclass
class SearchResult:
    """What `QuestionSearch.search` found for one question."""

    question: str
    #: The forms searched (`question_forms`).
    forms: list[str]
    #: Up to k documents, by descending score.
    documents: list[DocumentScore]
    found: bool
    #: The figures `found` was decided on, for a note a person can read.
    reason: str
    #: Retrieved chunks the screen left out: [{"doc_id", "chunk_id", "reason"}].
    excluded: list[dict] = field(default_factory=list)

    def passages(self) -> list[SearchHit]:
        """The documents' chunks in document order (each document's best chunk first), with
        the document's score: what the answer is built from and the citations list."""
        return [
            SearchHit(s.hit.id, s.hit.doc_id, s.hit.title, s.hit.text, s.hit.source, s.hit.lang, round(document.score, 4))
            for document in self.documents
            for s in document.chunks
        ]


#: `screen(hits) -> (kept hits, [{"doc_id", "chunk_id", "reason"} for each left out])`.
Screen = Callable[[list[SearchHit]], tuple[list[SearchHit], list[dict]]]


def _keep_all(hits: list[SearchHit]) -> tuple[list[SearchHit], list[dict]]:
    return hits, []


class QuestionSearch:
    """Hybrid search for a question over one index version (module docstring).

    `screen` filters retrieved chunks before they count as evidence (rag/answer.py passes the
    prompt-injection check); by default every chunk is kept. Chunk vectors are re-embedded from
    the chunk text rather than read from the store, so the cosine is the same whichever store
    answers (Weaviate returns fused scores only), and cached by chunk id (an id hashes the
    chunk's text, so a cached vector never goes stale)."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        *,
        alpha: float = 0.5,
        candidates: int = 20,
        bridge_sources: int = 2,
        language_margin: float = LANGUAGE_MARGIN,
        min_relevance: float = MIN_RELEVANCE,
        min_cosine: float = MIN_COSINE,
        strong_cosine: float = STRONG_COSINE,
        screen: Screen = _keep_all,
    ) -> None:
        """Raises ValueError for an `alpha` outside 0-1 or fewer than one candidate."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        self.store = store
        self.embedder = embedder
        self.alpha = alpha
        #: Chunks asked of each store search (vector and keyword, per question form).
        self.candidates = candidates
        #: Passages in the question's language used as bridges to other languages (step 4).
        self.bridge_sources = bridge_sources
        self.language_margin = language_margin
        self.min_relevance = min_relevance
        self.min_cosine = min_cosine
        self.strong_cosine = strong_cosine
        self.screen = screen
        self._vectors: dict[str, np.ndarray] = {}

    def search(self, version: str, question: str, lang: str, k: int = 5) -> SearchResult:
        """The evidence for `question`, written in `lang` (as curation.langid names it), in
        index `version`: up to `k` documents by score, and whether the question is answered."""
        forms = question_forms(question)
        query_vectors = np.asarray(self.embedder.embed(forms))
        pool: dict[str, SearchHit] = {}
        for form, vector in zip(forms, query_vectors):
            for alpha in (1.0, 0.0):  # the store's vector search, then its keyword search
                for hit in self.store.query(version, vector, form, k=self.candidates, alpha=alpha):
                    pool.setdefault(hit.id, hit)
        hits, excluded = self.screen(list(pool.values()))
        terms = list(dict.fromkeys(t for form in forms for t in question_terms(form)))
        weights = term_weights(terms, [_content(h) for h in hits])
        scored = {s.hit.id: s for s in self._score(hits, query_vectors, terms, weights)}
        self._bridge(version, scored, lang, query_vectors, terms, weights)
        documents = self._documents(sorted(scored.values(), key=lambda s: -s.relevance), terms, weights, lang)[: max(k, 1)]
        found, reason = self._found(documents)
        return SearchResult(question, forms, documents, found, reason, excluded)

    def _embedded(self, hits: Sequence[SearchHit]) -> np.ndarray:
        missing = [h for h in hits if h.id not in self._vectors]
        if missing:
            for hit, vector in zip(missing, self.embedder.embed([_content(h) for h in missing])):
                self._vectors[hit.id] = np.asarray(vector)
        if not hits:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.vstack([self._vectors[h.id] for h in hits])

    def _score(self, hits: Sequence[SearchHit], query_vectors: np.ndarray, terms: list[str], weights: dict[str, float]) -> list[ScoredHit]:
        if not hits:
            return []
        cosines = (self._embedded(hits) @ query_vectors.T).max(axis=1)
        scored = []
        for hit, cosine in zip(hits, cosines):
            usable = applicable_terms(terms, hit.lang)
            keyword = keyword_coverage(usable, _content(hit), weights)
            scored.append(ScoredHit(hit, float(cosine), keyword, bool(usable), alpha=self.alpha))
        return scored

    def _bridge(self, version: str, scored: dict[str, ScoredHit], lang: str, query_vectors: np.ndarray,
                terms: list[str], weights: dict[str, float]) -> None:
        """Adds to `scored` (in place) the other-language counterparts of the best passages in
        the question's own language, with their `bridge` evidence (module docstring, step 4)."""
        own = ANSWER_LANGUAGES.get(lang, (lang,))
        sources = sorted((s for s in scored.values() if s.hit.lang in own), key=lambda s: -s.direct)[: self.bridge_sources]
        if not sources:
            return
        source_vectors = self._embedded([s.hit for s in sources])
        reached: dict[str, SearchHit] = {}
        for vector in source_vectors:
            for hit in self.store.query(version, vector, "", k=self.candidates, alpha=1.0):
                if hit.lang not in own:
                    reached.setdefault(hit.id, hit)
        kept, _ = self.screen(list(reached.values()))  # what the screen leaves out is reported once, from the main search
        if not kept:
            return
        vectors = self._embedded(kept)
        for source, source_vector in zip(sources, source_vectors):
            # One query per (question form, source passage): the question plus the passage.
            expanded = query_vectors + source_vector
            expanded /= np.maximum(np.linalg.norm(expanded, axis=1, keepdims=True), 1e-12)
            for hit, cosine in zip(kept, (vectors @ expanded.T).max(axis=1)):
                bridge = min(float(cosine), source.direct)
                current = scored.get(hit.id) or self._score([hit], query_vectors, terms, weights)[0]
                if bridge > current.bridge:
                    scored[hit.id] = ScoredHit(current.hit, current.vector, current.keyword, current.keyword_applies, bridge, self.alpha)

    def _documents(self, scored: list[ScoredHit], terms: list[str], weights: dict[str, float], lang: str) -> list[DocumentScore]:
        by_document: dict[str, list[ScoredHit]] = {}
        for item in scored:  # most relevant first, so each document's list is too
            by_document.setdefault(item.hit.doc_id, []).append(item)
        documents = []
        for doc_id, chunks in by_document.items():
            best = chunks[0]
            usable = applicable_terms(terms, best.hit.lang)
            keyword = keyword_coverage(usable, "\n".join(_content(c.hit) for c in chunks), weights)
            vector = max(c.vector for c in chunks)
            together = self.alpha * vector + (1.0 - self.alpha) * keyword if usable else vector
            relevance = max(best.relevance, together)
            score = relevance + language_bonus(best.hit.lang, lang, self.language_margin)
            documents.append(DocumentScore(doc_id, best.hit.lang, relevance, vector, keyword, score, tuple(chunks)))
        return sorted(documents, key=lambda d: -d.score)

    def _found(self, documents: list[DocumentScore]) -> tuple[bool, str]:
        if not documents:
            return False, "no passage retrieved"
        best = max(documents, key=lambda d: d.relevance)
        closest = max(documents, key=lambda d: d.vector)
        by_words = best.relevance >= self.min_relevance and best.vector >= self.min_cosine
        by_meaning = closest.vector >= self.strong_cosine
        reason = (f"best document {best.doc_id}: relevance {best.relevance:.2f} (min {self.min_relevance}) with cosine "
                  f"{best.vector:.2f} (min {self.min_cosine}), keyword coverage {best.keyword:.2f}; closest document "
                  f"{closest.doc_id}: cosine {closest.vector:.2f} (strong from {self.strong_cosine})")
        return by_words or by_meaning, reason


def _content(hit: SearchHit) -> str:
    """The text the index embedded for a chunk (chunking.Chunk.content): title, newline, text."""
    return f"{hit.title}\n{hit.text}"
