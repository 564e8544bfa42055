"""`packing: documents`: rows of whole documents by next fit, positions restarting at each document, the first
token of each document never a target, and attention that never crosses a document boundary."""

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from medtrain.data_prep.reader import DocumentRows, Sample, count_samples, open_samples, pack_rows
from medtrain.train.attention import DOCUMENTS
from medtrain.train.batches import IGNORE, collate, collate_rows


def test_rows_are_filled_in_order_by_next_fit_with_long_documents_truncated():
    # 5+4 | 3 (9 would make 12) | 9 | 2 | 20, truncated to 10 | 1: no row over seq_len, the order kept
    assert pack_rows(np.array([5, 4, 3, 9, 2, 20, 1]), 10).tolist() == [0, 2, 3, 4, 5, 6, 7]
    assert pack_rows(np.array([3, 3, 3, 1, 5]), 10).tolist() == [0, 4, 5]
    assert pack_rows(np.array([10, 10]), 10).tolist() == [0, 1, 2]


def test_document_rows_over_a_prepared_dataset(token_data):
    rows = open_samples(token_data["sft"], "sft", 64, "documents")
    assert isinstance(rows, DocumentRows)
    lengths = [32, 7, 72, 14, 43, 11]  # the documents; 72 is truncated to 64
    assert [r.doc_lens.tolist() for r in (rows[i] for i in range(len(rows)))] == [[32, 7], [64], [14, 43], [11]]
    assert rows.num_tokens() == sum(min(n, 64) for n in lengths)
    assert rows[2].prompt_lens.tolist() == [6, 15] and len(rows[2].input_ids) == 57
    assert count_samples(token_data["continual"], "continual", 64, "documents") == (4, rows.num_tokens(), 6)


def test_collated_rows_restart_positions_and_mask_each_documents_first_token_and_prompt():
    row = Sample(np.arange(10, 19), doc_lens=np.array([4, 5]), prompt_lens=np.array([2, 3]))
    batch = collate_rows([row, None], pad_id=0)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    assert batch["labels"][0].tolist() == [IGNORE, IGNORE, 12, 13, IGNORE, IGNORE, IGNORE, 17, 18]
    assert (batch["labels"][1] == IGNORE).all() and batch["attention_mask"][1].sum() == 0
    plain = collate_rows([Sample(np.arange(10, 16), doc_lens=np.array([3, 3]))], pad_id=0)
    assert plain["labels"][0].tolist() == [IGNORE, 11, 12, IGNORE, 14, 15]


def _model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


def test_no_attention_crosses_a_document_boundary():
    """Change the middle document of a row: the other documents' logits do not move, and every document's logits
    are those it has alone, unpacked on SDPA."""
    model = _model()
    docs = [np.arange(3, 10), np.arange(20, 25), np.arange(40, 46)]
    alone = [model(input_ids=torch.from_numpy(d).unsqueeze(0)).logits[0] for d in docs]
    model.set_attn_implementation(DOCUMENTS)

    def row_logits(ds):
        batch = collate_rows([Sample(np.concatenate(ds), doc_lens=np.array([len(d) for d in ds]))], pad_id=0)
        return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]

    with torch.no_grad():
        before = row_logits(docs)
        after = row_logits([docs[0], np.arange(60, 65), docs[2]])
    assert torch.equal(before[:7], after[:7]) and torch.equal(before[12:], after[12:])
    assert not torch.allclose(before[7:12], after[7:12])
    for got, want in zip(torch.split(before, [7, 5, 6]), alone, strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def test_padding_after_the_last_document_is_its_own_segment():
    """Two rows of different lengths in one micro-batch: the shorter one's padding changes none of its logits."""
    model = _model()
    model.set_attn_implementation(DOCUMENTS)
    long = Sample(np.arange(3, 15), doc_lens=np.array([6, 6]))
    short = Sample(np.arange(30, 37), doc_lens=np.array([4, 3]))
    with torch.no_grad():
        both = collate_rows([long, short], pad_id=0)
        together = model(input_ids=both["input_ids"], position_ids=both["position_ids"]).logits
        single = collate_rows([short], pad_id=0)
        alone = model(input_ids=single["input_ids"], position_ids=single["position_ids"]).logits
    assert torch.allclose(together[1, :7], alone[0], atol=1e-6)
    assert collate([short], np.array([0]), pad_id=0)["position_ids"].shape == (1, 7)  # rows go through collate


def test_plan_states_rows_documents_per_row_and_tokens_per_step(token_data):
    """With `packing: documents` the global batch counts rows, and the plan says so from the prepared data."""
    from pathlib import Path

    from medtrain.core.recipe import load_recipe
    from medtrain.launch.hostfile import read_hostfile
    from medtrain.launch.plan import make_plan

    repo = Path(__file__).resolve().parents[2]
    overrides = [f"data={token_data['sft']}", "packing=documents", "seq_len=64", "global_batch=2", "micro_batch=1",
                 "model=tiny", "init=random", "val_data=null"]
    recipe = load_recipe(repo / "recipes/tiny/sft.yaml", overrides)
    plan = make_plan(recipe, read_hostfile(repo / "hostfiles/localhost"))
    assert plan.data.samples == 4 and plan.data.documents == 6 and plan.steps_per_epoch == 2
    line = next(x for x in plan.render().splitlines() if x.startswith("packing"))
    assert line == "packing      documents: 4 rows of 1.5 documents on average (6 documents), 86 tokens per step", line
