from pathlib import Path

import pytest

from medtrain.core.recipe import RecipeError, load_recipe
from medtrain.core.run_spec import accumulation_steps

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "recipes").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.stage in ("continual", "sft")


def test_paper_recipes_state_table_1():
    for name in ("continual_llama2_13b.yaml", "sft_cmexam_reasoning.yaml"):
        r = load_recipe(REPO / "recipes" / "paper" / name)
        assert (r.lr, r.global_batch, r.seq_len, r.epochs, r.warmup_ratio) == (2e-5, 120, 4096, 1, 0.03)
        assert (r.precision, r.optimizer, r.gradient_checkpointing) == ("fp16", "adafactor", True)
    assert load_recipe(REPO / "recipes/paper/continual_llama2_13b.yaml").checkpoint_every == 750


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


BASE = "stage: continual\nmodel: tiny\ndata: d\noutput_dir: o\n"


def test_unknown_key_is_named_with_the_file(tmp_path):
    p = _write(tmp_path, BASE + "learning_rate: 1e-4\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: unknown key 'learning_rate'"):
        load_recipe(p)


def test_every_unknown_key_is_named_once_with_what_it_likely_meant(tmp_path):
    """Other tools' names and typos get a "did you mean"; the known keys are listed once, only when some key has
    no likely meaning."""
    p = _write(tmp_path, BASE + "learning_rate: 1e-4\nseq_lenn: 512\nper_device_train_batch_size: 2\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert "'learning_rate' (did you mean lr?)" in msg and "'seq_lenn' (did you mean seq_len?)" in msg
    assert "'per_device_train_batch_size' (did you mean micro_batch?)" in msg and "known keys" not in msg
    assert len(msg.splitlines()) == 1
    p = _write(tmp_path, BASE + "zzz: 1\nqqq: 2\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert str(e.value).count("known keys: stage, model") == 1


def test_an_unknown_set_key_blames_set_not_the_file(tmp_path):
    p = _write(tmp_path, BASE)
    with pytest.raises(RecipeError) as e:
        load_recipe(p, ["lrr=3e-5"])
    assert str(e.value) == "--set: unknown key 'lrr' (did you mean lr?)"
    with pytest.raises(RecipeError, match="--set 'lr' must look like key=value"):
        load_recipe(p, ["lr"])


def test_wrong_type_names_key_and_expected_type(tmp_path):
    p = _write(tmp_path, BASE + "seq_len: long\n")
    with pytest.raises(RecipeError, match=r"key 'seq_len' must be int, got 'long'"):
        load_recipe(p)


def test_missing_field_and_bad_literal_reported_together(tmp_path):
    p = _write(tmp_path, "stage: pretrain\nmodel: tiny\ndata: d\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert "missing required key 'output_dir'" in str(e.value)
    assert "key 'stage' must be 'continual' | 'sft'" in str(e.value)


def test_yaml_1_1_exponent_string_is_read_as_float(tmp_path):
    assert load_recipe(_write(tmp_path, BASE + "lr: 2e-5\n")).lr == 2e-5


def test_overrides_land_on_the_same_fields_and_are_checked(tmp_path):
    p = _write(tmp_path, BASE)
    assert load_recipe(p, ["seq_len=256", "precision=bf16"]).seq_len == 256
    with pytest.raises(RecipeError, match="unknown key 'sequence'"):
        load_recipe(p, ["sequence=3"])


def test_batch_equation_names_all_three_numbers(tmp_path):
    r = load_recipe(_write(tmp_path, BASE + "global_batch: 120\nmicro_batch: 2\n"))
    assert accumulation_steps(r.global_batch, r.micro_batch, 6, r.source) == 10
    with pytest.raises(RecipeError, match=r"global_batch=120 .* micro_batch=2 x world_size=7 = 14"):
        accumulation_steps(r.global_batch, r.micro_batch, 7, r.source)
