"""MedQA in every public layout: the official US 4- and 5-option, Mainland and Taiwan JSON Lines, the Hugging Face
copies with an options object, bigbio/med_qa's key/value list, and a plain list. Each record's letter is checked."""

import json

from medtrain.core.templates import get_template
from medtrain.data_prep.sources import SOURCES, Example

RECORDS = [
    # official US, 4 options (data_clean/questions/US/4_options/phrases_no_exclude_train.jsonl)
    ({"question": "A 23-year-old woman ... Which drug is most appropriate?", "answer": "Nitrofurantoin",
      "options": {"A": "Ampicillin", "B": "Ceftriaxone", "C": "Doxycycline", "D": "Nitrofurantoin"},
      "meta_info": "step2&3", "answer_idx": "D", "metamap_phrases": ["23 year old woman"]}, "D"),
    # official US, 5 options (US/train.jsonl)
    ({"question": "Which enzyme is deficient?", "answer": "Hexosaminidase A",
      "options": {"A": "Glucocerebrosidase", "B": "Hexosaminidase A", "C": "Sphingomyelinase",
                  "D": "Galactocerebrosidase", "E": "Arylsulfatase A"}, "meta_info": "step1", "answer_idx": "B"}, "B"),
    # Mainland (Mainland/train.jsonl): Chinese, five options
    ({"question": "男，45岁。反复上腹痛3年，最可能的诊断是",
      "options": {"A": "胃溃疡", "B": "十二指肠溃疡", "C": "胃癌", "D": "慢性胃炎", "E": "胆囊炎"},
      "answer": "十二指肠溃疡", "meta_info": "卫生法规", "answer_idx": "B"}, "B"),
    # Taiwan (Taiwan/train.jsonl): traditional Chinese, four options, answer given as text only
    ({"question": "下列何者為第一型糖尿病之主要病理機轉？", "options": {"A": "胰島素阻抗", "B": "β細胞自體免疫破壞",
      "C": "升糖素過多", "D": "肝醣分解增加"}, "answer": "β細胞自體免疫破壞", "meta_info": "taiwan"}, "B"),
    # bigbio/med_qa, med_qa_en_source
    ({"meta_info": "step1", "question": "Which vitamin prevents scurvy?", "answer_idx": "C", "answer": "C vit",
      "options": [{"key": "A", "value": "A vit"}, {"key": "B", "value": "D vit"}, {"key": "C", "value": "C vit"},
                  {"key": "D", "value": "K vit"}]}, "C"),
    # a copy with options as a plain list and the answer as text
    ({"question": "Drug of choice for absence seizures?", "options": ["Phenytoin", "Ethosuximide", "Valproate"],
      "answer": "Ethosuximide"}, "B"),
]


def test_every_layout_gives_the_right_letter(tmp_path):
    path = tmp_path / "medqa.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r, _ in RECORDS))
    got = list(SOURCES["medqa"].read(path, get_template("cmexam_answer_only"), None))
    assert all(isinstance(e, Example) for e in got), got
    assert [e.response.strip()[-1] for e in got] == [letter for _, letter in RECORDS]
    assert "E 胆囊炎" in got[2].prompt  # five options kept

