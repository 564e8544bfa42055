"""MedMCQA's answer index in both public copies: the official release counts `cop` from 1 (its loader does
cop - 1), the Hugging Face copy from 0 (a ClassLabel a-d, -1 on the unlabelled test split). Each record's letter is
checked; a file that fits both conventions is refused with the flag that decides."""

import json

import pytest

from medtrain.core.templates import get_template
from medtrain.data_prep.format import DatasetError
from medtrain.data_prep.sources import SOURCES, Example, Skip, detect_answer_base

OPTIONS = {"opa": "Vitamin A", "opb": "Vitamin D", "opc": "Vitamin C", "opd": "Vitamin K"}


def _rec(i: int, cop) -> dict:
    """A record in both copies' field layout (id, question, opa..opd, cop, choice_type, exp, subject/topic)."""
    return {"id": f"q{i}", "question": f"Question {i}?", **OPTIONS, "cop": cop, "choice_type": "single",
            "exp": f"Because {i}.", "subject_name": "Biochemistry", "topic_name": None}


def _write(path, cops) -> None:
    path.write_text("".join(json.dumps(_rec(i, c), ensure_ascii=False) + "\n" for i, c in enumerate(cops)))


def _letters(path, base=None) -> list:
    src = SOURCES["medmcqa"]
    base = detect_answer_base([path])[0] if base is None else base
    out = []
    for item in src.with_answer_base(base).read(path, get_template("cmexam_answer_only"), None):
        out.append(item.response.strip()[-1] if isinstance(item, Example) else item.reason)
    return out


def test_the_official_release_counts_from_1(tmp_path):
    path = tmp_path / "train.json"  # JSON Lines despite the extension
    _write(path, [1, 2, 3, 4, "3"])
    assert detect_answer_base([path])[0] == 1
    assert _letters(path) == ["A", "B", "C", "D", "C"]  # cop "3" as a string is C too


def test_the_hugging_face_copy_counts_from_0_and_its_test_split_is_unlabelled(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    _write(train, [0, 1, 2, 3, 2])
    _write(test, [-1, -1])
    assert detect_answer_base([train])[0] == 0 and detect_answer_base([test])[0] == 0
    assert _letters(train) == ["A", "B", "C", "D", "C"]  # cop 2 is option C, not B
    assert _letters(test) == ["unlabelled_test_record", "unlabelled_test_record"]


def test_values_that_fit_both_copies_are_refused_with_the_flag_that_decides(tmp_path):
    path = tmp_path / "dev.json"
    _write(path, [1, 2, 3, 2])
    with pytest.raises(DatasetError, match=r"fits both .* --answer-index 1 .* --answer-index 0"):
        detect_answer_base([path])
    assert _letters(path, base=1) == ["A", "B", "C", "B"]
    assert _letters(path, base=0) == ["B", "C", "D", "C"]


def test_mixed_copies_are_refused(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write(a, [0, 1])
    _write(b, [4, 2])
    with pytest.raises(DatasetError, match="both"):
        detect_answer_base([a, b])


def test_cnmleqa_layout_needs_no_index(tmp_path):
    path = tmp_path / "cnmleqa.jsonl"
    rec = {"question": "问题?", "opa": "甲", "opb": "乙", "opc": "丙", "opd": "丁", "ope": "戊", "answer": "ope"}
    path.write_text(json.dumps(rec, ensure_ascii=False) + "\n")
    assert detect_answer_base([path])[0] == 1
    assert _letters(path) == ["E"]
    assert not isinstance(next(iter(SOURCES["medmcqa"].read(path, get_template("cmexam_answer_only"), None))),
                          Skip)


def _eval_letters(path, answer_index=None) -> list:
    from medtrain.eval.data import read_mc_subject
    from medtrain.eval.task import load_task

    return [q.answer for q in read_mc_subject(load_task("medmcqa"), path.parent, "medmcqa", "test", answer_index)]


def test_eval_takes_answer_index_as_prep_does_for_a_file_that_fits_both(tmp_path):
    from medtrain.eval.task import TaskError

    path = tmp_path / "test.jsonl"
    _write(path, [1, 2, 3, 2])
    with pytest.raises(TaskError, match="--answer-index 1 or 0"):
        _eval_letters(path)
    assert _eval_letters(path, 1) == ["A", "B", "C", "B"] == _letters(path, base=1)
    assert _eval_letters(path, 0) == ["B", "C", "D", "C"] == _letters(path, base=0)


def test_eval_calls_an_unlabelled_test_record_unlabelled_as_prep_does(tmp_path):
    from medtrain.eval.task import TaskError

    path = tmp_path / "test.jsonl"
    _write(path, [0, -1, 2])
    with pytest.raises(TaskError, match=r"test.jsonl:2: an unlabelled test record \(cop -1\)"):
        _eval_letters(path)
    assert _letters(path)[1] == "unlabelled_test_record"
