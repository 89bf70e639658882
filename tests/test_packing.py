"""SFT packing: whole conversations per row, and a packed row trains exactly like the
conversations one by one."""

import pytest
import torch

from hkgai_pipelines.training.packing import PackedCollator, pack_conversations


def _conversation(length: int, first: int, prompt: int = 2) -> dict:
    ids = list(range(first, first + length))
    return {"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]}


def test_best_fit_decreasing_layout_on_literal_lengths():
    encoded = [_conversation(n, 10 * i) for i, n in enumerate([3, 6, 2, 5, 4])]
    rows = pack_conversations(encoded, seq_len=8)
    # Longest first: 6 opens row 0, 5 row 1, 4 row 2, then 3 fits row 1 (free 3), 2 fits row 0 (free 2).
    assert [r["input_ids"] for r in rows] == [
        [10, 11, 12, 13, 14, 15, 20, 21],
        [30, 31, 32, 33, 34, 0, 1, 2],
        [40, 41, 42, 43],
    ]
    assert rows[0]["position_ids"] == [0, 1, 2, 3, 4, 5, 0, 1]
    assert rows[0]["labels"] == [-100, -100, 12, 13, 14, 15, -100, -100]
    assert sum(len(r["input_ids"]) for r in rows) == 3 + 6 + 2 + 5 + 4  # nothing dropped


def test_a_conversation_longer_than_a_row_is_an_error():
    with pytest.raises(ValueError, match="conversation 1 has 9 tokens; a packed row holds 1 to 8"):
        pack_conversations([_conversation(3, 0), _conversation(9, 0)], seq_len=8)


def test_padding_is_its_own_segment():
    batch = PackedCollator(pad_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 0]},
                                      {"input_ids": [8], "labels": [-100], "position_ids": [0]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert "attention_mask" not in batch and batch["use_cache"] is False  # else no segment mask


def test_a_packed_row_scores_each_conversation_as_if_it_were_alone():
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    from tests.conftest import TINY_DEEPSEEK

    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(DeepseekV3Config(**TINY_DEEPSEEK)).eval()
    generator = torch.Generator().manual_seed(1)
    encoded = []
    for length in (9, 7, 5, 11):
        ids = torch.randint(3, TINY_DEEPSEEK["vocab_size"], (length,), generator=generator).tolist()
        encoded.append({"input_ids": ids, "labels": [-100] * 2 + ids[2:]})
    rows = pack_conversations(encoded, seq_len=16)
    assert len(rows) == 2  # 11+5, 9+7
    batch = PackedCollator(pad_id=0)(rows)
    with torch.no_grad():
        packed = model(**batch)
        packed_logits, packed_loss = packed.logits, float(packed.loss)
        alone = [model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in encoded]
        losses = [(float(model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss),
                   sum(label != -100 for label in e["labels"][1:])) for e in encoded]
    # Row 0 is conversation 3 (11 tokens) then conversation 2 (5 tokens).
    torch.testing.assert_close(packed_logits[0, :11], alone[3], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed_logits[0, 11:16], alone[2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed_logits[1, 9:16], alone[1], atol=1e-4, rtol=1e-4)
    # The packed loss is the token-weighted mean of the per-conversation losses.
    expected = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert packed_loss == pytest.approx(expected, rel=1e-4)
