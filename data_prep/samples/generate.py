"""Regenerate the shipped samples from knowledge.py: python -m medtrain.data_prep.samples.generate

Deterministic (fixed seed), so the checked-in files are exactly what this script writes.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from medtrain.data_prep.samples.knowledge import FACTS

HERE = Path(__file__).resolve().parent
LETTERS = "ABCDE"
FIELDS = {"symptom": 4, "test": 6, "drug": 8, "cause": 10, "dept": 2}


def _zh(row, what):
    if what == "symptom":
        return row[4][0]
    return row[FIELDS[what]]


def _en(row, what):
    if what == "symptom":
        return row[5][0]
    return row[FIELDS[what] + 1]


def huatuo_records(rng: random.Random) -> list[dict]:
    out = []
    for r in FACTS:
        name, dept, sym, test, drug, cause = r[0], r[2], r[4], r[6], r[8], r[10]
        qa = [
            ([f"{name}有哪些症状？", f"{name}的表现是什么"], f"{name}的典型症状包括{'、'.join(sym)}。出现这些情况应及时到{dept}就诊。"),
            ([f"{name}挂什么科？"], f"{name}一般挂{dept}。医生会根据情况安排{test}。"),
            ([f"{name}怎么治疗？", f"{name}吃什么药"], f"{name}的常用治疗是{drug}，具体方案需遵医嘱。"),
            ([f"{name}需要做什么检查？"], f"确诊{name}常做{test}。"),
            ([f"{name}是什么原因引起的？"], f"{name}主要由{cause}引起。"),
            ([f"为什么会{sym[0]}和{sym[1]}？"], f"{sym[0]}和{sym[1]}可见于{name}，建议做{test}明确诊断。"),
            ([f"{drug}治什么病？"], f"{drug}常用于治疗{name}。"),
            ([f"{test}能查出什么病？"], f"{test}常用于诊断{name}。"),
            ([f"我最近{sym[2]}，是不是{name}？"], f"{sym[2]}是{name}的表现之一，另外还可有{sym[0]}、{sym[1]}，请到{dept}检查。"),
            ([f"{name}能治好吗"], f"{name}经规范治疗多可控制，常用{drug}，并需去除{cause}等因素。"),
            ([f"得了{name}要注意什么？"], f"{name}患者应定期复查{test}，按时使用{drug}。"),
            ([f"{name}的病因"], f"{cause}是{name}的主要病因。"),
        ]
        for questions, answer in qa:
            nested = [questions] if rng.random() < 0.5 else questions  # Huatuo nests variants in lists
            out.append({"questions": nested, "answers": [answer]})
    rng.shuffle(out)
    return out


def _options(rng: random.Random, correct: list[str], pool: list[str], n: int) -> tuple[list[str], str]:
    distractors = [p for p in dict.fromkeys(pool) if p not in correct]
    rng.shuffle(distractors)
    options = correct + distractors[: n - len(correct)]
    rng.shuffle(options)
    return options, "".join(LETTERS[i] for i, o in enumerate(options) if o in correct)


def mcq_rows(rng: random.Random) -> list[dict]:
    rows = []
    stems = {
        "symptom": ("{name}的典型表现是", "{name}的典型症状包括{ans}。"),
        "test": ("确诊{name}最常用的检查是", "{name}确诊常依靠{ans}。"),
        "drug": ("治疗{name}的常用方案是", "{name}的常用治疗为{ans}。"),
        "cause": ("{name}的主要病因是", "{name}主要由{ans}引起。"),
        "dept": ("{name}患者应就诊的科室是", "{name}属于{ans}诊治范围。"),
    }
    for i, r in enumerate(FACTS):
        for kind, (stem, why) in stems.items():
            correct = _zh(r, kind)
            pool = [_zh(o, kind) for o in FACTS if o is not r and _zh(o, kind) != correct]
            n = 5 if rng.random() < 0.85 else 4
            options, answer = _options(rng, [correct], pool, n)
            rows.append(_row(stem.format(name=r[0]), options, answer, why.format(name=r[0], ans=correct), r, i))
        sym = list(r[4][:2])
        pool = [s for o in FACTS if o is not r for s in o[4]]
        options, answer = _options(rng, sym, pool, 5)
        rows.append(_row(f"下列哪些是{r[0]}的常见症状", options, answer, f"{r[0]}常见{'、'.join(r[4])}。", r, i))
        options, answer = _options(rng, [r[0]], [o[0] for o in FACTS if o is not r], 5)
        rows.append(_row(f"患者{r[4][0]}、{r[4][1]}，{r[6]}异常，最可能的诊断是", options, answer,
                         f"{'、'.join(r[4][:2])}结合{r[6]}提示{r[0]}。", r, i))
    return rows


def _row(question, options, answer, explanation, r, i) -> dict:
    return {
        "Question": question,
        "Options": "\n".join(f"{LETTERS[k]} {o}" for k, o in enumerate(options)),
        "Answer": answer,
        "Explanation": explanation + f"故选{answer}。",
        "Disease Group": r[3],
        "Area of Competency": "诊断" if "诊断" in question or "检查" in question else "医学知识",
        "Clinical Department": r[2],
        "Medical Discipline": "临床医学",
        "Difficulty level": str(1 + i % 5),
    }


def english_mcq(rng: random.Random, zh: bool) -> list[tuple[str, list[str], str]]:
    items = []
    for r in FACTS:
        for kind in ("symptom", "test", "drug", "dept"):
            get = _zh if zh else _en
            correct = get(r, kind)
            pool = [get(o, kind) for o in FACTS if o is not r and get(o, kind) != correct]
            options, answer = _options(rng, [correct], pool, 4)
            name = r[0] if zh else r[1]
            q = {
                "symptom": ("{}的典型症状是", "Which is a typical symptom of {}?"),
                "test": ("确诊{}常用的检查是", "Which test is most used to confirm {}?"),
                "drug": ("{}的常用治疗是", "Which is a first-line treatment for {}?"),
                "dept": ("{}应就诊于", "Which department usually treats {}?"),
            }[kind][0 if zh else 1].format(name)
            items.append((q, options, answer))
    rng.shuffle(items)
    return items


def _csv(rows: list[list[str]], header: list[str] | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def main() -> None:
    rng = random.Random(20231025)
    (HERE / "huatuo_sample.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in huatuo_records(rng)), encoding="utf-8")
    rows = mcq_rows(rng)
    rng.shuffle(rows)
    cut = int(len(rows) * 0.75)
    base = ["Question", "Options", "Answer", "Explanation"]
    meta = ["Disease Group", "Area of Competency", "Clinical Department", "Medical Discipline", "Difficulty level"]
    (HERE / "cmexam_train.csv").write_text(_csv([[r[k] for k in base] for r in rows[:cut]], base), encoding="utf-8")
    (HERE / "cmexam_test.csv").write_text(_csv([[r[k] for k in base + meta] for r in rows[cut:]], base + meta),
                                          encoding="utf-8")
    for bench, zh in (("mmlu", False), ("cmmlu", True)):
        items = english_mcq(rng, zh)
        subjects = {"clinical_knowledge": items[: len(items) // 2], "college_medicine": items[len(items) // 2:]}
        for subject, its in subjects.items():
            dev, test = its[:5], its[5:]
            for split, part in (("dev", dev), ("test", test)):
                folder = HERE / bench / split
                folder.mkdir(parents=True, exist_ok=True)
                if bench == "mmlu":
                    text = _csv([[q, *opts, ans] for q, opts, ans in part])
                    (folder / f"{subject}_{split}.csv").write_text(text, encoding="utf-8")
                else:
                    text = _csv([[str(i), q, *opts, ans] for i, (q, opts, ans) in enumerate(part)],
                                ["", "Question", "A", "B", "C", "D", "Answer"])
                    (folder / f"{subject}.csv").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
