"""Every public layout of each benchmark through both readers: prep's (training examples) and eval's (questions)
take the same records with the same gold letters, because both read through core.benchmarks. The MedQA questions
are six real ones (US 4- and 5-option, Mainland, Taiwan), each written in the four public layouts."""

import csv
import json

import pytest

from medtrain.core.templates import ANSWER_PREFIX, get_template
from medtrain.data_prep.sources import SOURCES, Example, detect_answer_base
from medtrain.eval.data import read_cmexam, read_mc_subject
from medtrain.eval.task import load_task

TEMPLATE = get_template("cmexam_answer_only")

MEDQA = [  # question, options, gold letter
    ("A 23-year-old woman ... Which drug is most appropriate?",
     ["Ampicillin", "Ceftriaxone", "Doxycycline", "Nitrofurantoin"], "D"),
    ("Which enzyme is deficient?",
     ["Glucocerebrosidase", "Hexosaminidase A", "Sphingomyelinase", "Galactocerebrosidase", "Arylsulfatase A"], "B"),
    ("男，45岁。反复上腹痛3年，最可能的诊断是", ["胃溃疡", "十二指肠溃疡", "胃癌", "慢性胃炎", "胆囊炎"], "B"),
    ("下列何者為第一型糖尿病之主要病理機轉？", ["胰島素阻抗", "β細胞自體免疫破壞", "升糖素過多", "肝醣分解增加"], "B"),
    ("Which vitamin prevents scurvy?", ["A vit", "D vit", "C vit", "K vit"], "C"),
    ("Drug of choice for absence seizures?", ["Phenytoin", "Ethosuximide", "Valproate", "Carbamazepine"], "B"),
]


def _medqa_layouts() -> dict[str, list[dict]]:
    out = {"official": [], "bigbio": [], "plain_list": [], "gbaker": []}
    for q, opts, gold in MEDQA:
        i = "ABCDE".index(gold)
        letters = dict(zip("ABCDE", opts, strict=False))
        out["official"].append({"question": q, "options": letters, "answer": opts[i], "answer_idx": gold,
                                "meta_info": "step1"})
        out["bigbio"].append({"question": q, "answer_idx": gold, "answer": opts[i],
                              "options": [{"key": k, "value": v} for k, v in letters.items()]})
        out["plain_list"].append({"question": q, "options": opts, "answer": opts[i]})
        out["gbaker"].append({"id": f"g{len(out['gbaker'])}", "sent1": q, "sent2": "", "label": i,
                              **{f"ending{j}": o for j, o in enumerate(opts)}})
    return out


def _prep_answers(source: str, path, base: int | None = None) -> list[tuple[str, str]]:
    """(question line, gold letters) of each example prep makes from the file."""
    src = SOURCES[source] if base is None else SOURCES[source].with_answer_base(base)
    got = list(src.read(path, TEMPLATE, None))
    assert all(isinstance(e, Example) for e in got), [getattr(e, "reason", e) for e in got]
    return [(e.prompt.split("问题: ")[1].split("\n")[0], e.response.removeprefix(ANSWER_PREFIX)) for e in got]


def _eval_answers(questions) -> list[tuple[str, str]]:
    return [(q.question, q.answer) for q in questions]


def _jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


@pytest.mark.parametrize("layout", ["official", "bigbio", "plain_list", "gbaker"])
def test_medqa_every_layout_through_prep_and_eval(tmp_path, layout):
    _jsonl(tmp_path / "test.jsonl", _medqa_layouts()[layout])
    expected = [(q, gold) for q, _, gold in MEDQA]
    assert _prep_answers("medqa", tmp_path / "test.jsonl") == expected
    questions = read_mc_subject(load_task("medqa"), tmp_path, "medqa", "test")
    assert _eval_answers(questions) == expected
    assert [len(q.options) for q in questions] == [len(o) for _, o, _ in MEDQA]


CMEXAM = [  # question, options, answer as stored, gold letters
    ("男，30岁。发热伴咳嗽3天，最可能的诊断是", {"A": "肺炎", "B": "肺结核", "C": "支气管炎", "D": "哮喘", "E": "肺癌"},
     "A", "A"),
    ("下列属于β-内酰胺类抗生素的是", {"A": "青霉素", "B": "红霉素", "C": "头孢菌素", "D": "庆大霉素", "E": "四环素"},
     "CA", "AC"),
]


def _cmexam_layouts(tmp_path) -> dict:
    rows = [{"Question": q, "Options": "\n".join(f"{k} {v}" for k, v in o.items()), "Answer": a, "Explanation": "",
             "Difficulty level": "1"} for q, o, a, _ in CMEXAM]
    csv_path = tmp_path / "test.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    jsonl_dict, json_list = tmp_path / "dict.jsonl", tmp_path / "list.json"
    _jsonl(jsonl_dict, [{"question": q, "options": o, "answer": a} for q, o, a, _ in CMEXAM])
    json_list.write_text(json.dumps([{"Question": q, "Options": [f"{k} {v}" for k, v in o.items()], "Answer": a}
                                     for q, o, a, _ in CMEXAM], ensure_ascii=False), encoding="utf-8")
    return {"csv": csv_path, "jsonl_options_object": jsonl_dict, "json_array_options_list": json_list}


@pytest.mark.parametrize("layout", ["csv", "jsonl_options_object", "json_array_options_list"])
def test_cmexam_every_layout_through_prep_and_eval(tmp_path, layout):
    path = _cmexam_layouts(tmp_path)[layout]
    expected = [(q, gold) for q, _, _, gold in CMEXAM]
    assert _prep_answers("cmexam", path) == expected
    assert _eval_answers(read_cmexam(path)) == expected


MEDMCQA_COPS = {"official": [1, 4, 3], "hugging_face": [0, 3, 2]}  # the same answers: A, D, C


@pytest.mark.parametrize("copy", sorted(MEDMCQA_COPS))
def test_medmcqa_both_copies_through_prep_and_eval(tmp_path, copy):
    records = [{"id": f"m{i}", "question": f"Question {i}?", "opa": "Vitamin A", "opb": "Vitamin D", "opc": "Vitamin C",
                "opd": "Vitamin K", "cop": cop, "exp": "", "choice_type": "single"}
               for i, cop in enumerate(MEDMCQA_COPS[copy])]
    _jsonl(tmp_path / "test.jsonl", records)
    expected = [(f"Question {i}?", gold) for i, gold in enumerate("ADC")]
    base, _ = detect_answer_base([tmp_path / "test.jsonl"])
    assert _prep_answers("medmcqa", tmp_path / "test.jsonl", base) == expected
    assert _eval_answers(read_mc_subject(load_task("medmcqa"), tmp_path, "medmcqa", "test")) == expected
