"""Task metrics for a sentence encoder, beside the embedding cosine (issue #20, item 4).

Mean cosine to the fp32 embeddings says how far the vectors moved, not what a user of them
loses. Two downstream uses are measured here on held-out data, numpy and scipy only:

* **A linear probe** (what a user with a classifier trained on the fp32 encoder gets): an
  L2-regularised logistic regression is *fitted on the fp32 encoder's embeddings* of one part
  of a labelled sentence set (its L2 strength chosen by cross-validation inside that part)
  and *scores the other part* with the embeddings under test. The
  sentences are dealt into ``folds`` seeded, stratified folds by their source line (a review
  split into two sentences stays on one side); every fold is scored by the probe fitted on
  the others, so each sentence is scored once by a probe that never saw it or its review. The
  same probes score the fp32 embeddings too (the fp32 row), so the compressed encoder's
  accuracy is read against the same classifiers.
* **Word-similarity ranking**: Spearman's rank correlation between the cosine of two words'
  embeddings and the mean human rating of the pair (WordSim-353, SimLex-999); nothing is
  fitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from edgefit_common.errors import DataError

__all__ = ["C_GRID", "PROBE_FOLDS", "PROBE_SEED", "Probe", "ProbeScore", "choose_c", "fit_probe",
           "pair_cosines", "probe_folds", "probe_score", "probe_scores", "spearman", "word_list"]

PROBE_FOLDS = 2  # halves: 100 reviews to fit on, 100 to score, then the other way round
PROBE_SEED = 0
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # inverse L2 strengths tried
INNER_FOLDS = 5  # the fitting half's own folds, which choose C (the scored half never does)


def probe_folds(labels: ArrayLike, groups: ArrayLike | None = None,
                folds: int = PROBE_FOLDS, seed: int = PROBE_SEED) -> np.ndarray:
    """The fold (0..folds-1) of each sample: the groups of each class shuffled with ``seed``
    and dealt round-robin, so the folds keep the class shares and a group never spans two
    folds. ``groups`` None: every sample is its own group."""
    y = np.asarray(labels, dtype=np.int64)
    g = np.arange(len(y)) if groups is None else np.asarray(groups, dtype=np.int64)
    if len(g) != len(y):
        raise DataError(f"{len(y)} labels but {len(g)} groups")
    rng = np.random.default_rng(seed)
    fold_of_group: dict[int, int] = {}
    for c in np.unique(y):
        members = np.unique(g[y == c])
        if any(int(m) in fold_of_group for m in members):
            raise DataError(f"group(s) hold more than one class (class {int(c)})")
        for k, group in enumerate(rng.permutation(members)):
            fold_of_group[int(group)] = k % folds
    out = np.array([fold_of_group[int(v)] for v in g], dtype=np.int64)
    if len(np.unique(out)) != folds:
        raise DataError(f"{len(np.unique(g))} groups are too few for {folds} folds")
    return out


@dataclass(frozen=True)
class Probe:
    """A fitted multinomial logistic regression on standardised features."""

    mean: np.ndarray  # (D,) of the features it was fitted on
    scale: np.ndarray  # (D,)
    weights: np.ndarray  # (D, K)
    bias: np.ndarray  # (K,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._logits(x).argmax(1), dtype=np.int64)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.weights + self.bias


def fit_probe(x: np.ndarray, y: np.ndarray, classes: int, c: float = 1.0) -> Probe:
    """Minimise sum of cross-entropies + ||W||^2 / (2c) (scikit-learn's LogisticRegression
    objective, multinomial, bias unpenalised) with scipy's L-BFGS on features standardised by
    the fitting set's own mean and deviation (floored)."""
    from scipy.optimize import minimize

    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise DataError(f"a probe needs (N, D) features and N labels, got {x.shape} and "
                        f"{len(y)}")
    mean, std = x.mean(0), x.std(0)
    # a dimension that barely varies (MiniLM has one constant to ~1e-33) is not blown up to
    # unit variance: its deviation is floored at 1/1000 of the median dimension's
    scale = np.maximum(std, 1e-3 * float(np.median(std)) + 1e-12)
    z = (x - mean) / scale
    onehot = np.eye(classes)[np.asarray(y, np.int64)]
    d = z.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * classes].reshape(d, classes), theta[d * classes:]
        logits = z @ w + b
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        err = np.exp(logp) - onehot  # d(cross-entropy)/d(logits)
        value = -(onehot * logp).sum() + (w * w).sum() / (2 * c)
        grad = np.concatenate([(z.T @ err + w / c).ravel(), err.sum(0)])
        return float(value), grad

    res = minimize(loss, np.zeros(d * classes + classes), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000})
    w = res.x[: d * classes].reshape(d, classes)
    return Probe(mean, scale, w, res.x[d * classes:])


def choose_c(x: np.ndarray, y: np.ndarray, classes: int, groups: np.ndarray,
             seed: int = PROBE_SEED) -> float:
    """The C of :data:`C_GRID` with the best accuracy over ``INNER_FOLDS`` grouped folds of
    the fitting data alone (ties: the stronger regularisation): with ~100 sentences to fit on
    and 384 features, how hard to regularise is a property of the data, chosen as a
    scikit-learn user would with LogisticRegressionCV, never on the scored sentences."""
    fold = probe_folds(y, groups, INNER_FOLDS, seed)
    best, best_acc = C_GRID[0], -1.0
    for c in C_GRID:
        hits = 0
        for f in range(INNER_FOLDS):
            held = fold == f
            hits += int((fit_probe(x[~held], y[~held], classes, c).predict(x[held])
                         == y[held]).sum())
        if hits / len(y) > best_acc:
            best, best_acc = c, hits / len(y)
    return best


@dataclass(frozen=True)
class ProbeScore:
    """The probes' accuracy on the sentences they never saw: on the fp32 embeddings
    (``reference_accuracy``) and on the embeddings under test (``accuracy``), and how often the
    two predictions agree."""

    reference_accuracy: float
    accuracy: float
    agreement: float
    samples: int
    folds: int
    seed: int
    c: tuple[float, ...]  # the C each fold's probe was fitted with (chosen on its fitting part)


def probe_score(reference: np.ndarray, embeddings: np.ndarray, labels: Sequence[int],
                groups: Sequence[int] | None = None, folds: int = PROBE_FOLDS,
                seed: int = PROBE_SEED) -> ProbeScore:
    """Cross-fitted probe accuracy of ``embeddings`` (:func:`probe_scores` for one)."""
    return probe_scores(reference, [embeddings], labels, groups, folds, seed)[0]


def probe_scores(reference: np.ndarray, embeddings: Sequence[np.ndarray],
                 labels: Sequence[int], groups: Sequence[int] | None = None,
                 folds: int = PROBE_FOLDS, seed: int = PROBE_SEED) -> list[ProbeScore]:
    """Cross-fitted probe accuracy: for each fold, a probe fitted on ``reference`` (the fp32
    embeddings) of the other folds predicts this fold from ``reference`` and from each of
    ``embeddings``; every sample is predicted once. The probes are fitted once for all."""
    ref = np.asarray(reference)
    embs = [np.asarray(e) for e in embeddings]
    for emb in embs:
        if ref.shape != emb.shape or ref.ndim != 2:
            raise DataError(f"need (N, D) embedding arrays of one shape, got {ref.shape} and "
                            f"{emb.shape}")
    y = np.asarray(labels, dtype=np.int64)
    g = np.arange(len(y)) if groups is None else np.asarray(groups, dtype=np.int64)
    fold = probe_folds(y, g, folds, seed)
    classes = int(y.max()) + 1
    pred_ref = np.empty_like(y)
    preds = [np.empty_like(y) for _ in embs]
    chosen = []
    for f in range(folds):
        scored = fold == f
        c = choose_c(ref[~scored], y[~scored], classes, g[~scored], seed)
        probe = fit_probe(ref[~scored], y[~scored], classes, c)
        pred_ref[scored] = probe.predict(ref[scored])
        for pred, emb in zip(preds, embs, strict=True):
            pred[scored] = probe.predict(emb[scored])
        chosen.append(c)
    return [ProbeScore(float((pred_ref == y).mean()), float((pred == y).mean()),
                       float((pred == pred_ref).mean()), len(y), folds, seed, tuple(chosen))
            for pred in preds]


def word_list(pairs: Sequence[tuple[str, str, float]]) -> list[str]:
    """The distinct words of rated pairs, in first-seen order (each embedded once)."""
    return list(dict.fromkeys(w for a, b, _ in pairs for w in (a, b)))


def pair_cosines(words: Sequence[str], embeddings: np.ndarray,
                 pairs: Sequence[tuple[str, str, float]]) -> np.ndarray:
    """Cosine of the two words' embeddings for each pair (rows of ``embeddings`` follow
    ``words``)."""
    index = {w: i for i, w in enumerate(words)}
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    a = e[[index[p[0]] for p in pairs]]
    b = e[[index[p[1]] for p in pairs]]
    return np.asarray((a * b).sum(1))


def spearman(scores: np.ndarray, ratings: Sequence[float]) -> float:
    """Spearman's rank correlation (ties at their mean rank), scipy's."""
    from scipy.stats import spearmanr

    return float(spearmanr(scores, np.asarray(ratings, np.float64)).statistic)


def probe_report(test: object, reference: np.ndarray, compressed: np.ndarray,
                 simulated: np.ndarray | None = None) -> dict[str, object] | None:
    """The probe's figures for a held-out sentence set with task labels (None without): the
    fp32 encoder's, the compressed (shipped) encoder's and, if given, the fake-quant torch
    model's accuracy, as fractions, with what was fitted on what."""
    labels = tuple(getattr(test, "task_labels", ()) or ())
    if not labels or len(set(labels)) < 2:
        return None
    classes = "/".join(getattr(test, "task_classes", ()))
    groups = tuple(getattr(test, "lines", ()) or ()) or None
    runs = [compressed] + ([] if simulated is None else [simulated])
    scores = probe_scores(reference, runs, labels, groups)
    shipped = scores[0]
    return {
        "metric": "linear-probe accuracy",
        "task": f"{classes} label of each held-out sentence ({len(labels)} sentences)",
        "how": (f"logistic regression (L2; C from {list(C_GRID)} chosen by {INNER_FOLDS}-fold "
                "cross-validation inside the fitting part) fitted on the fp32 encoder's "
                f"embeddings of {shipped.folds - 1} of {shipped.folds} seeded folds (seed "
                f"{shipped.seed}, stratified, a review's sentences in one fold) and scored on "
                "the remaining fold with the embeddings under test; every sentence scored "
                "once by a probe that never saw it"),
        "sentences": shipped.samples,
        "fp32": shipped.reference_accuracy,
        "compressed": shipped.accuracy,
        "simulated": None if simulated is None else scores[1].accuracy,
        "drop_pp": 100.0 * (shipped.reference_accuracy - shipped.accuracy),
        "agreement": shipped.agreement,
        "c": list(shipped.c),
    }
