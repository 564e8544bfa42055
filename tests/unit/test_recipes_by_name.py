"""Built-in recipes by name: `medtrain recipes` lists them and `recipes cp` copies one out to edit."""

from pathlib import Path

from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.core.recipe import builtin_recipes, load_recipe

REPO = Path(__file__).resolve().parents[2]


def test_recipes_by_name_list_and_copy(tmp_path):
    assert set(builtin_recipes()) == {"paper/continual_llama2_13b", "paper/sft_cmexam_reasoning", "tiny/continual",
                                      "tiny/sft"}
    assert load_recipe("paper/continual_llama2_13b").checkpoint_every == 750
    assert load_recipe("recipes/paper/continual_llama2_13b.yaml").model == "meta-llama/Llama-2-13b-hf"
    for path in builtin_recipes().values():
        assert "../" not in path.read_text(), f"{path} names a path that exists only beside this repository"
    r = CliRunner().invoke(app, ["recipes", "cp", "paper/sft_cmexam_reasoning", str(tmp_path)])
    assert r.exit_code == 0, r.output
    copied = tmp_path / "sft_cmexam_reasoning.yaml"
    assert load_recipe(copied).stage == "sft"
    again = CliRunner().invoke(app, ["recipes", "cp", "paper/sft_cmexam_reasoning", str(copied)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    unknown = CliRunner().invoke(app, ["plan", "--recipe", "paper/nope", "--hosts", str(REPO / "hostfiles/v100x20")])
    assert unknown.exit_code == 2 and "medtrain recipes" in unknown.output
