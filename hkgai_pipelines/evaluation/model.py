"""The model interface every evaluation suite uses: `loglikelihood` and `generate`, batched,
over any stage's checkpoint directory or an MLflow model URI.

Prompts are rendered with the checkpoint's own chat template as one user turn, so a suite
scores a reply the way the model would be asked in service. Bad requests (empty, over
`max_prompt_chars`, not text) come back as results with an `error`, never as an exception in
the middle of a batch: a suite records the item as errored and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hkgai_pipelines.training.tokenizer import chat_ids

MAX_PROMPT_CHARS = 20_000


class ModelLoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class Likelihood:
    #: Sum of the continuation tokens' log-probabilities (nats).
    logprob: float = 0.0
    tokens: int = 0
    error: str | None = None

    @property
    def mean(self) -> float:
        """Length-normalised: per continuation token."""
        return self.logprob / self.tokens if self.tokens else float("-inf")


@dataclass(frozen=True)
class Generation:
    text: str = ""
    error: str | None = None


def request_error(text, max_chars: int = MAX_PROMPT_CHARS) -> str | None:
    """Why a prompt or continuation cannot be scored, or None."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            return f"not valid UTF-8 ({error.reason} at byte {error.start})"
        return "bytes given; decode to str first"
    if not isinstance(text, str):
        return f"expected text, got {type(text).__name__}"
    if not text.strip():
        return "empty"
    if len(text) > max_chars:
        return f"{len(text):,} characters, over the limit of {max_chars:,}"
    return None


def find_model_dir(local: Path) -> Path | None:
    """The checkpoint inside a downloaded artifact: the folder itself, its `checkpoint/`, or the
    artifact directory of a registered pyfunc (`artifacts/<name>/`, named after the source)."""
    local = Path(local)
    candidates = [local, local / "checkpoint", *sorted(p for p in (local / "artifacts").glob("*") if p.is_dir())]
    return next((c for c in candidates if (c / "config.json").exists()), None)


def resolve_model_dir(uri: str) -> Path:
    """A checkpoint directory as is; `models:/...` or `runs:/...` downloaded through MLflow (the
    tracking URI from the environment). Raises ModelLoadError naming what is missing."""
    if "://" not in uri and ":/" not in uri:
        path = Path(uri)
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{uri}: not a model directory (no config.json)")
        return path
    import mlflow

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as error:  # MlflowException, connection errors: one clear message
        raise ModelLoadError(f"{uri}: could not be fetched from MLflow ({mlflow.get_tracking_uri()}): {error}") from error
    found = find_model_dir(local)
    if found is None:
        raise ModelLoadError(f"{uri}: downloaded to {local}, but it holds no model directory")
    return found


def left_padding_is_exact(model) -> bool:
    """Whether a left-padded batch generates what each prompt would alone. Not for DeepSeek-V4
    with compressed attention: its compressors pool fixed windows of row positions, the padding
    included, so `generate` runs such a model one prompt at a time. (Scoring pads on the right,
    after the scored tokens, and stays batched.)"""
    from hkgai_pipelines.training.architectures import has_compressed_attention

    return not has_compressed_attention(model.config)


class EvalModel:
    def __init__(self, model, tokenizer, name: str, batch_size: int = 8, max_prompt_chars: int = MAX_PROMPT_CHARS) -> None:
        import torch

        self.torch = torch
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.max_prompt_chars = max_prompt_chars
        self.max_length = int(getattr(model.config, "max_position_embeddings", 4096))

    @classmethod
    def load(cls, uri: str, **kwargs) -> EvalModel:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from transformers.utils import logging as hf_logging

        # transformers' "Loading weights" bars on stderr: noise around `hkgai ask --json` and in
        # every run log, for a load that takes a second.
        hf_logging.disable_progress_bar()
        folder = resolve_model_dir(uri)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32 if not torch.cuda.is_available() else "auto")
        except Exception as error:
            raise ModelLoadError(f"{uri}: the checkpoint did not load: {error}") from error
        if torch.cuda.is_available():
            model = model.to("cuda")
        return cls(model, tokenizer, name=uri, **kwargs)

    # ------------------------------------------------------------------ encoding

    def _context_ids(self, prompt: str) -> list[int]:
        if self.tokenizer.chat_template:
            return chat_ids(self.tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
        return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]

    def _continuation_ids(self, context: list[int], prompt: str, continuation: str) -> list[int]:
        """The continuation's tokens as the full conversation tokenizes them (so merges across
        the boundary match how the model saw answers in training)."""
        if self.tokenizer.chat_template:
            full = chat_ids(self.tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": continuation}])
            if full[: len(context)] == context:
                return full[len(context):]
        return self.tokenizer(continuation, add_special_tokens=False)["input_ids"]

    # ------------------------------------------------------------------ API

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[Likelihood]:
        """log P(continuation | prompt) for each (prompt, continuation), in request order."""
        results: list[Likelihood | None] = [None] * len(requests)
        encoded = []
        for index, (prompt, continuation) in enumerate(requests):
            error = request_error(prompt, self.max_prompt_chars) or request_error(continuation, self.max_prompt_chars)
            if error:
                results[index] = Likelihood(error=error)
                continue
            context = self._context_ids(prompt)
            target = self._continuation_ids(context, prompt, continuation)
            ids = (context + target)[-self.max_length:]  # keep the continuation whole, cut the prompt's start
            encoded.append((index, ids, min(len(target), len(ids) - 1)))
        # Longest first: batches of similar length waste less padding.
        encoded.sort(key=lambda item: -len(item[1]))
        for start in range(0, len(encoded), self.batch_size):
            batch = encoded[start:start + self.batch_size]
            for (index, _, _), result in zip(batch, self._score_batch(batch)):
                results[index] = result
        return results

    def _score_batch(self, batch) -> list[Likelihood]:
        torch = self.torch
        width = max(len(ids) for _, ids, _ in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, ids, _) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        device = next(self.model.parameters()).device
        # Position t predicts token t+1, so a row's continuation is scored from position
        # len(ids) - n_target - 1 on. Only the last `keep` positions reach the LM head: with a
        # 129,280-token vocabulary, the head over a long prompt is most of the memory.
        keep = max(width - (len(ids) - n_target - 1) for _, ids, n_target in batch)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep).logits
        offset = width - logits.shape[1]
        out = []
        for row, (_, ids, n_target) in enumerate(batch):
            # The softmax runs over the continuation's positions only.
            start = len(ids) - n_target - 1 - offset
            predicting = logits[row, start:start + n_target].float().log_softmax(dim=-1)
            targets = input_ids[row, len(ids) - n_target:len(ids)].to(predicting.device)
            out.append(Likelihood(logprob=float(predicting.gather(1, targets[:, None]).sum()), tokens=n_target))
        return out

    def generate(self, prompts: list[str], max_new_tokens: int = 96) -> list[Generation]:
        """Greedy replies, batched with left padding (one prompt at a time where padding would change
        them: `left_padding_is_exact`)."""
        torch = self.torch
        # The prompt must leave room for the reply inside the model's context; the prompt is
        # cut from the left so the question at its end survives.
        max_new_tokens = min(max_new_tokens, max(self.max_length // 4, 16))
        results: list[Generation | None] = [None] * len(prompts)
        valid = []
        for index, prompt in enumerate(prompts):
            error = request_error(prompt, self.max_prompt_chars)
            if error:
                results[index] = Generation(error=error)
            else:
                valid.append((index, self._context_ids(prompt)[-(self.max_length - max_new_tokens):]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        batch_size = self.batch_size if left_padding_is_exact(self.model) else 1
        for start in range(0, len(valid), batch_size):
            batch = valid[start:start + batch_size]
            width = max(len(ids) for _, ids in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, ids) in enumerate(batch):
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                mask[row, width - len(ids):] = 1
            with torch.no_grad():
                output = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                             do_sample=False, pad_token_id=pad, repetition_penalty=1.2, no_repeat_ngram_size=3)
            for row, (index, _) in enumerate(batch):
                results[index] = Generation(text=self.tokenizer.decode(output[row, width:], skip_special_tokens=True).strip())
        return results
