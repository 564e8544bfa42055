"""The scan's mechanics on token ids alone: every planted question window is found wherever it falls (across
the hashing slices, the workers' ranges and nothing across a document boundary), short questions are found
whole, and the hits agree with a plain Python search."""

import numpy as np
import pytest
from token_data import write_dataset

from medtrain.contamination import ngrams, scan
from medtrain.contamination.ngrams import QuestionGrams, window_hashes
from medtrain.contamination.scan import Candidates


def test_window_hashes_equal_hashing_each_window_alone():
    x = np.random.default_rng(0).integers(0, 50_000, 40).astype(np.uint64)
    got = {length: h.copy() for length, h in window_hashes(x, 20, (3, 13))}
    for length in (3, 13):
        for i in range(20):
            _, alone = next(window_hashes(x[i:i + length], 1, (length,)))
            assert got[length][i] == alone[0]


def _corpus(rng, n_docs=40, size=(50, 400)):
    return [rng.integers(3, 90, int(rng.integers(*size))).tolist() for _ in range(n_docs)]


@pytest.mark.parametrize("slice_tokens,range_tokens", [(64, 1000), (1 << 18, 1 << 22)])
def test_planted_questions_are_found_across_slices_and_ranges(tmp_path, monkeypatch, slice_tokens, range_tokens):
    monkeypatch.setattr(ngrams, "SLICE_TOKENS", slice_tokens)
    monkeypatch.setattr(scan, "RANGE_TOKENS", range_tokens)
    rng = np.random.default_rng(1)
    questions = [rng.integers(3, 90, n).tolist() for n in (30, 20, 8, 22)]  # the third is shorter than 13
    docs = _corpus(rng)
    planted = {0: 3, 1: 17, 2: 25}  # question -> document; question 3 is planted across two documents only
    for q, d in planted.items():
        docs[d][7:7] = questions[q]
    docs[30] += questions[3][:11]
    docs[31][:0] = questions[3][11:]
    root = write_dataset(tmp_path / "d", docs)
    grams = QuestionGrams.build([np.array(q) for q in questions], 13)
    candidates = Candidates(np.array([len(q) for q in questions]), [np.load(root / "offsets.npy")])
    scanned = scan.scan(grams, [root], [sum(map(len, docs))], candidates, workers=1, progress=lambda n: None)
    assert scanned == sum(map(len, docs))
    best = {q: keys[0] for q, keys in candidates.by_question().items()}
    assert {q: key[2] for q, key in best.items()} == planted
    for q, d in planted.items():
        c = candidates.pairs[best[q]]
        first = sum(map(len, docs[:d]))
        assert (c.start - first, c.stop - first) == (7, 7 + len(questions[q]))
        assert c.windows == len(questions[q]) - min(13, len(questions[q])) + 1


def test_two_workers_find_what_one_finds(tmp_path):
    rng = np.random.default_rng(2)
    questions = [rng.integers(3, 90, 40).tolist() for _ in range(5)]
    docs = _corpus(rng, n_docs=200)
    for q in range(5):
        docs[q * 30][5:5] = questions[q]
    root = write_dataset(tmp_path / "d", docs)
    found = []
    for workers in (1, 2):
        grams = QuestionGrams.build([np.array(q) for q in questions], 13)
        candidates = Candidates(np.array([40] * 5), [np.load(root / "offsets.npy")])
        scan.scan(grams, [root], [sum(map(len, docs))], candidates, workers=workers, progress=lambda n: None)
        found.append({k: (c.windows, c.start, c.stop) for k, c in candidates.pairs.items()})
    assert found[0] == found[1]
    assert {k[1]: k[2] for k in found[0] if found[0][k][0] == 28} == {q: q * 30 for q in range(5)}
