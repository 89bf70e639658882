"""The fused linear + cross-entropy loss equals the plain one, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from hkgai_pipelines.training.losses import fused_linear_cross_entropy, shift_labels, use_fused_linear_cross_entropy


def test_loss_and_gradients_match_cross_entropy_with_ignored_rows_and_a_ragged_last_chunk():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (37,))
    labels[[3, 9, 36]] = -100
    reference = F.cross_entropy(hidden @ weight.T, labels, ignore_index=-100)
    (reference * 3).backward()
    expected_hidden, expected_weight = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    fused = fused_linear_cross_entropy(hidden, weight, labels, chunk_tokens=8)  # 5 chunks, the last of 5 rows
    (fused * 3).backward()
    assert fused.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.allclose(hidden.grad, expected_hidden, atol=1e-6)
    assert torch.allclose(weight.grad, expected_weight, atol=1e-6)
    assert hidden.grad[3].abs().max() == 0  # an ignored position gets no gradient


def test_shift_labels_predicts_the_next_token():
    assert shift_labels(torch.tensor([[5, 6, 7]])).tolist() == [[6, 7, -100]]


def test_all_rows_ignored_gives_zero_not_nan():
    hidden = torch.randn(4, 8, requires_grad=True)
    loss = fused_linear_cross_entropy(hidden, torch.randn(10, 8), torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(hidden.grad) == 0


def test_model_forward_with_fused_loss_matches_transformers(tiny_deepseek):
    torch.manual_seed(1)
    model = tiny_deepseek()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    labels = ids.clone()
    labels[0, :4] = -100
    expected = model(input_ids=ids, labels=labels).loss
    expected.backward()
    expected_grad = model.lm_head.weight.grad.clone()
    model.zero_grad()
    keys = set(model.state_dict())

    use_fused_linear_cross_entropy(model, chunk_tokens=5)
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logits is None
    assert torch.allclose(model.lm_head.weight.grad, expected_grad, atol=1e-6)
    assert set(model.state_dict()) == keys  # checkpoints stay loadable by from_pretrained
    assert model(input_ids=ids).logits.shape == (2, 12, model.config.vocab_size)  # generation path unchanged
