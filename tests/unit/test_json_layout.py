"""JSON Lines or a JSON array is read from the content, not the extension: MedMCQA's official train.json is JSON
Lines (its own loader and HELM read it line by line), and a `.json` array still parses."""

import json

import pytest

from medtrain.core.templates import get_template
from medtrain.data_prep.format import DatasetError
from medtrain.data_prep.sources import SOURCES, Example, is_json_lines, iter_json_records

# records in the official release's layout (medmcqa/data/train.json): one object per line, cop numbered from 1
OFFICIAL = [
    {"question": "Which vitamin deficiency causes scurvy?", "exp": "Vitamin C is needed for collagen.",
     "cop": 3, "opa": "Vitamin A", "opb": "Vitamin D", "opc": "Vitamin C", "opd": "Vitamin K",
     "subject_name": "Biochemistry", "topic_name": None, "id": "a1", "choice_type": "single"},
    {"question": "Drug of choice for absence seizures?", "exp": "", "cop": 1, "opa": "Ethosuximide",
     "opb": "Phenytoin", "opc": "Carbamazepine", "opd": "Phenobarbitone", "subject_name": "Pharmacology",
     "topic_name": None, "id": "a2", "choice_type": "single"},
]


def test_a_json_file_of_json_lines_is_read_line_by_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in OFFICIAL))
    assert is_json_lines(path)
    examples = list(SOURCES["medmcqa"].read(path, get_template("cmexam_answer_only"), None))
    assert all(isinstance(e, Example) for e in examples), examples
    assert [e.response.strip()[-1] for e in examples] == ["C", "A"]  # cop is 1-based in the official release
    assert [e.where for e in examples] == [f"{path}:1", f"{path}:2"]


def test_a_json_array_still_parses_and_garbage_is_one_line(tmp_path):
    array = tmp_path / "records.json"
    array.write_text("\ufeff\n" + json.dumps(OFFICIAL, indent=2))
    assert not is_json_lines(array)
    assert [r["id"] for _, r in iter_json_records(array)] == ["a1", "a2"]
    bad = tmp_path / "bad.json"
    bad.write_text("id,question\n1,what\n")
    with pytest.raises(DatasetError, match="neither a JSON array .* nor JSON Lines"):
        list(iter_json_records(bad))
