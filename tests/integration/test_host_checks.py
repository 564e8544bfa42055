"""--check's per-host input checks on a real prepared dataset and tokenizer: what is missing, different or short
of room is named."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes/tiny/continual.yaml"


def test_host_checks_name_what_is_missing_different_or_short_of_room(tmp_path, tiny_sets):
    import shutil

    from medtrain.core.recipe import load_recipe
    from medtrain.launch.host_checks import check_host, decode, encode, expectations

    sets = [x for x in tiny_sets if x != "--set"]
    recipe = load_recipe(TINY, [*sets, f"output_dir={tmp_path / 'run'}"])
    expect = decode(encode(expectations(recipe, disk_bytes=1000)))  # as the ranks receive it
    assert set(expect["paths"]) == {"data", "tokenizer"}  # init: random: no model directory to compare
    assert check_host(expect) == []

    data, tok = Path(expect["paths"]["data"]["path"]), Path(expect["paths"]["tokenizer"]["path"])
    other_data, other_tok = tmp_path / "data", tmp_path / "tok"
    shutil.copytree(data, other_data)
    shutil.copytree(tok, other_tok)
    expect["paths"]["data"]["path"], expect["paths"]["tokenizer"]["path"] = str(other_data), str(other_tok)
    assert check_host(expect) == [], "a copy elsewhere is the same data and tokenizer"

    (other_data / "manifest.json").write_text((data / "manifest.json").read_text().replace("{", "{ ", 1))
    raw = json.loads((other_tok / "tokenizer.json").read_text())
    raw["model"]["vocab"]["zzz-not-in-the-original"] = len(raw["model"]["vocab"])
    (other_tok / "tokenizer.json").write_text(json.dumps(raw))
    expect["output"]["bytes"] = 2**60
    problems = check_host(expect)
    assert problems[0] == f"data {other_data} differs from the launching host's"
    assert problems[1] == f"tokenizer {other_tok} differs from the launching host's"
    assert "GiB free here, the plan writes 1073741824.0 GiB" in problems[2]

    shutil.rmtree(other_data)
    assert check_host(expect)[0] == f"data {other_data} missing here"

    from medtrain.core.recipe import RecipeError

    with pytest.raises(RecipeError, match="model '.*no-such-model' is not a directory on this machine"):
        expectations(load_recipe(TINY, [*sets, "init=pretrained", f"model={tmp_path / 'no-such-model'}"]), 0)
