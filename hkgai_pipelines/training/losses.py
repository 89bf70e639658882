"""A fused, chunked linear + cross-entropy loss for large vocabularies.

The DeepSeek vocabulary has 129,280 entries. Hugging Face's causal-LM head materialises the
logits of every position (8 x 2048 x 129,280 in bf16 is 4.2 GB, and the loss upcasts them to
float32), then the backward pass reads them again. Here the head's matmul, the log-softmax and
both gradients are computed chunk by chunk in the forward pass, so only one chunk of logits
exists at a time and the backward pass is a scaling of the gradients already computed.

`use_fused_linear_cross_entropy(model)` swaps a `*ForCausalLM`'s forward for one that returns
the same loss (mean over labelled tokens, labels shifted by one as in transformers) and no
logits. The state dict is untouched, so checkpoints stay loadable by `from_pretrained`.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _row_losses_and_grad(logits: torch.Tensor, target: torch.Tensor, scale: torch.Tensor):
    """Per-row loss and d(loss)/d(logits) = (softmax - one_hot) * scale, in the logits' dtype.

    Written as one reduction and one pointwise expression so that torch.compile fuses it into
    two passes over the chunk (eager PyTorch makes six, each over a float32 copy)."""
    dtype = logits.dtype
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, target[:, None]).squeeze(1)
    one_hot = torch.arange(logits.shape[1], device=logits.device)[None, :] == target[:, None]
    grad = (torch.exp(logits - lse[:, None]) - one_hot.float()) * scale[:, None]
    return lse - picked, grad.to(dtype)


_compiled_kernel = None


def _kernel(on_cuda: bool):
    global _compiled_kernel
    if not on_cuda:
        return _row_losses_and_grad
    if _compiled_kernel is None:
        _compiled_kernel = torch.compile(_row_losses_and_grad, dynamic=False)
    return _compiled_kernel


class FusedLinearCrossEntropy(torch.autograd.Function):
    """mean cross-entropy of softmax(hidden @ weight.T) against labels, ignoring IGNORE_INDEX."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_tokens: int):
        compute_dtype = hidden.dtype
        w = weight.to(compute_dtype)
        valid_all = labels != IGNORE_INDEX
        count = valid_all.sum().clamp(min=1)
        scale_all = valid_all.float() / count
        # Under no_grad (evaluation) the hidden states carry no grad: the gradients go unused.
        need_grads = hidden.requires_grad
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grads and weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        kernel = _kernel(hidden.is_cuda)
        for start in range(0, hidden.shape[0], chunk_tokens):
            end = start + chunk_tokens
            h = hidden[start:end]
            rows, grad_logits = kernel(h @ w.T, labels[start:end].clamp(min=0), scale_all[start:end])
            total += (rows * valid_all[start:end]).sum()
            if not need_grads:
                continue
            grad_hidden[start:end] = grad_logits @ w
            if grad_weight is not None:
                grad_weight.add_((grad_logits.T @ h).float())
        ctx.save_for_backward(grad_hidden, grad_weight if grad_weight is not None else torch.empty(0))
        ctx.weight_dtype = weight.dtype
        ctx.has_weight_grad = grad_weight is not None
        return total / count

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output.to(grad_hidden.dtype)
        weight_grad = (grad_weight * grad_output).to(ctx.weight_dtype) if ctx.has_weight_grad else None
        return grad_hidden * scale, weight_grad, None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_tokens: int = 4096) -> torch.Tensor:
    """hidden (N, H), weight (V, H), labels (N,): the mean loss over labels != -100."""
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be positive")
    return FusedLinearCrossEntropy.apply(hidden, weight, labels, chunk_tokens)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts token t+1 (what transformers' ForCausalLMLoss does)."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def use_fused_linear_cross_entropy(model, chunk_tokens: int = 4096):
    """Route `model(input_ids, labels=...)` through the fused loss; without labels the original
    forward runs (generation and evaluation are unchanged)."""
    original_forward = model.forward

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if labels is None:
            return original_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        kwargs.pop("num_items_in_batch", None)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = outputs.last_hidden_state
        loss = fused_linear_cross_entropy(
            hidden.reshape(-1, hidden.shape[-1]), self.lm_head.weight, shift_labels(labels).reshape(-1), chunk_tokens,
        )
        return CausalLMOutputWithPast(loss=loss, logits=None)

    model.forward = types.MethodType(forward, model)
    return model
