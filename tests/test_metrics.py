"""Tests of the array metrics: known answers, loop reimplementations, fast vs exact."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from gmg_jax import metrics
from gmg_jax.metrics import gbt, linear, svc

SIZES = (4, 3, 5)


def _factors(rng, num, sizes=SIZES):
  return np.stack([rng.integers(0, s, num) for s in sizes], axis=1)


def _perfect(factors, rng):
  """Axis-aligned code: dim j is a monotone function of factor j plus tiny noise."""
  return np.exp(factors / 3.0) + 1e-3 * rng.standard_normal(factors.shape)


def _loop_mi(a, b):
  """Plug-in MI (nats) by explicit counting."""
  n, mi = len(a), 0.0
  for x in set(a.tolist()):
    for y in set(b.tolist()):
      joint = sum(1 for i in range(n) if a[i] == x and b[i] == y) / n
      if joint > 0:
        mi += joint * np.log(joint / (np.mean(a == x) * np.mean(b == y)))
  return mi


def _loop_entropy(p, base):
  p = [v / sum(p) for v in p]
  return -sum(v * np.log(v) for v in p if v > 0) / np.log(base)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_histogram_discretize_bins_values_at_and_near_the_edges(mode):
  # 5 bins on [0, 10]: edges 0, 2, 4, 6, 8, 10; a value on an inner edge opens the next bin,
  # the maximum closes the last one. A constant column is widened to [1, 2]: edges every 0.2.
  column = [0.0, 1.75, 1.9999, 2.0, 2.0001, 3.5, 4.0, 6.0, 7.75, 8.0, 9.9999, 10.0]
  expected = [1, 1, 1, 2, 2, 2, 3, 4, 4, 5, 5, 5]
  codes = np.stack([column, np.full(len(column), 1.5)], axis=1).astype(np.float32)
  got = metrics.histogram_discretize(codes, 5, mode=mode)
  np.testing.assert_array_equal(got[:, 0], expected)
  np.testing.assert_array_equal(got[:, 1], 3)  # 1.5 lies in [1.4, 1.6)


def test_histogram_discretize_fast_equals_exact(rng):
  codes = rng.standard_normal((500, 4)).astype(np.float32)
  codes[:, 3] = -0.25  # a constant column
  np.testing.assert_array_equal(
    metrics.histogram_discretize(codes, 20, mode="fast"),
    metrics.histogram_discretize(codes, 20, mode="exact"),
  )


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_mutual_info_and_entropy_by_counting(rng, mode):
  codes = rng.integers(0, 4, (60, 3))
  factors = _factors(rng, 60, (3, 2))
  expected = [[_loop_mi(codes[:, i], factors[:, j]) for j in range(2)] for i in range(3)]
  np.testing.assert_allclose(
    metrics.discrete_mutual_info(codes, factors, mode=mode), expected, atol=1e-12
  )
  entropy = [_loop_entropy(np.bincount(f), np.e) for f in factors.T]
  np.testing.assert_allclose(metrics.discrete_entropy(factors, mode=mode), entropy, atol=1e-12)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_mig_known_answers_and_loop(rng, mode):
  factors = _factors(rng, 2000)
  perfect = _perfect(factors, rng)
  assert metrics.mig(perfect, factors, mode=mode)["discrete_mig"] > 0.97
  random = rng.standard_normal((2000, 3))
  assert abs(metrics.mig(random, factors, mode=mode)["discrete_mig"]) < 0.02
  mixed = np.stack([perfect[:, 0] + perfect[:, 1], perfect[:, 0] - perfect[:, 1]], 1)
  mixed = np.concatenate([mixed, perfect[:, 2:]], axis=1)
  assert metrics.mig(mixed, factors, mode=mode)["discrete_mig"] < 0.8
  perm = [2, 0, 1]
  assert metrics.mig(perfect[:, perm], factors, mode=mode) == pytest.approx(
    metrics.mig(perfect, factors, mode=mode)
  )
  codes = rng.standard_normal((300, 4))
  bins = metrics.histogram_discretize(codes, 20)
  gaps = []
  for j in range(factors.shape[1]):
    mi = sorted(_loop_mi(bins[:, i], factors[:300, j]) for i in range(4))
    gaps.append((mi[-1] - mi[-2]) / _loop_mi(factors[:300, j], factors[:300, j]))
  assert metrics.mig(codes, factors[:300], mode=mode)["discrete_mig"] == pytest.approx(
    np.mean(gaps), abs=1e-12
  )


def test_modularity_by_loop(rng):
  assert metrics.modularity(np.eye(3)) == pytest.approx(1.0)
  assert metrics.modularity(np.ones((2, 3))) == pytest.approx(0.0)
  assert metrics.modularity(np.zeros((2, 3))) == 0.0
  mi = rng.random((4, 3))
  expected = []
  for row in mi:
    sq = row**2
    expected.append(1 - (sq.sum() - sq.max()) / (sq.max() * (len(row) - 1)))
  assert metrics.modularity(mi) == pytest.approx(np.mean(expected))


def test_disentanglement_completeness_by_loop(rng):
  assert metrics.disentanglement(np.eye(3)) == pytest.approx(1.0, abs=1e-8)
  assert metrics.completeness(np.eye(3)) == pytest.approx(1.0, abs=1e-8)
  assert metrics.disentanglement(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-8)
  importance = rng.random((5, 3))  # rows codes, columns factors
  total = importance.sum()
  d = sum((1 - _loop_entropy(list(row + 1e-11), 3)) * row.sum() / total for row in importance)
  c = sum((1 - _loop_entropy(list(col + 1e-11), 5)) * col.sum() / total for col in importance.T)
  assert metrics.disentanglement(importance) == pytest.approx(d, abs=1e-12)
  assert metrics.completeness(importance) == pytest.approx(c, abs=1e-12)


@pytest.fixture(scope="module")
def dci_data():
  rng = np.random.default_rng(1)
  train, test = _factors(rng, 400, (3, 4)), _factors(rng, 200, (3, 4))
  return rng, train, test


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_dci_known_answers(dci_data, mode):
  rng, f_train, f_test = dci_data
  perfect = dict(zip(("train", "test"), (_perfect(f, rng) for f in (f_train, f_test)), strict=True))
  scores = metrics.dci(perfect["train"], f_train, perfect["test"], f_test, mode=mode)
  assert scores["disentanglement"] > 0.9 and scores["completeness"] > 0.9
  assert scores["informativeness_test"] == pytest.approx(1.0)
  permuted = metrics.dci(
    perfect["train"][:, ::-1], f_train, perfect["test"][:, ::-1], f_test, mode=mode
  )
  for key, value in scores.items():
    assert permuted[key] == pytest.approx(value, abs=0.02), key

  def mix(c):  # invertible rotation of the two codes: both factors stay predictable
    return np.stack([c[:, 0] + c[:, 1], c[:, 0] - c[:, 1]], axis=1)

  mixed = metrics.dci(mix(perfect["train"]), f_train, mix(perfect["test"]), f_test, mode=mode)
  assert mixed["disentanglement"] < scores["disentanglement"] - 0.3
  assert mixed["informativeness_test"] > 0.97
  noise = metrics.dci(
    rng.standard_normal((400, 2)), f_train, rng.standard_normal((200, 2)), f_test, mode=mode
  )
  assert noise["disentanglement"] < 0.1 and noise["informativeness_test"] < 0.5


def test_dci_exact_is_seeded(dci_data):
  rng, f_train, f_test = dci_data
  train, test = f_train + rng.normal(0, 0.8, f_train.shape), f_test + 0.0
  first = metrics.dci(train, f_train, test, f_test, random_state=3)
  assert metrics.dci(train, f_train, test, f_test, random_state=3) == first


def test_dci_exact_draws_like_unseeded_classifiers_after_a_global_seed(dci_data):
  """disentanglement_lib fits GradientBoostingClassifier() (no random_state) per factor in
  order: all draw from numpy's global stream. Ours must equal that after np.random.seed."""
  from sklearn.ensemble import GradientBoostingClassifier

  rng, f_train, f_test = dci_data
  train = np.concatenate([f_train, f_train[:, :1] + f_train[:, 1:]], 1)
  train = train + rng.normal(0, 0.8, train.shape)
  test = np.concatenate([f_test, f_test[:, :1] + f_test[:, 1:]], 1)
  importance, _, accuracy = metrics.importance_matrix(train, f_train, test, f_test, random_state=5)
  np.random.seed(5)
  models = [GradientBoostingClassifier().fit(train, y) for y in f_train.T]
  reference = np.stack([m.feature_importances_ for m in models], axis=1)
  np.testing.assert_allclose(importance, reference, rtol=0, atol=1e-12)
  predictions = [m.predict(test) for m in models]
  reference_accuracy = np.mean(
    [np.mean(p == y) for p, y in zip(predictions, f_test.T, strict=True)]
  )
  assert accuracy == reference_accuracy


def test_gbt_tree_matches_sklearn_tree(rng):
  """One tree of the compiled boosting: the same splits (features, thresholds), leaves and
  split improvements as sklearn's DecisionTreeRegressor, on values with repeats and with
  near-repeats (< 1e-7 apart, never split between)."""
  from sklearn.tree import DecisionTreeRegressor

  num = 400
  codes = np.round(rng.standard_normal((num, 3)), 1)  # ~50 distinct values per dim
  near = 1e-3 * rng.integers(0, 30, num) + 5e-8 * rng.integers(0, 2, num)
  codes = np.concatenate([codes, near[:, None]], axis=1).astype(np.float32)
  residual = np.sin(3 * codes[:, 0]) * codes[:, 1] + 300 * codes[:, 3] + rng.normal(0, 0.3, num)
  columns, order, sorted_values = gbt.sort_columns(codes)
  node_of, feature, threshold, improvement = gbt._grow_tree(
    order, sorted_values, columns, residual, rng.random((7, 4)), 3
  )
  reference = DecisionTreeRegressor(max_depth=3).fit(codes, residual).tree_
  leaf = reference.apply(codes)
  weighted_impurity = reference.n_node_samples * reference.impurity
  used = set()

  def compare(heap, node):
    left, right = reference.children_left[node], reference.children_right[node]
    if left == -1:
      assert feature[heap] == -1
      np.testing.assert_array_equal(node_of == heap, leaf == node)
      return
    used.add(int(reference.feature[node]))
    assert feature[heap] == reference.feature[node]
    assert threshold[heap] == reference.threshold[node]
    decrease = weighted_impurity[node] - weighted_impurity[left] - weighted_impurity[right]
    assert improvement[heap] == pytest.approx(decrease, rel=1e-9)
    compare(2 * heap + 1, left)
    compare(2 * heap + 2, right)

  compare(0, 0)
  assert 3 in used  # the near-repeat dim was split (only between values >= 1e-3 apart)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_gbt_boosting_matches_gradient_boosting_classifier(rng, num_classes):
  """On one code dim (no ties between features) the stages give sklearn's decision function:
  same prior, residuals, trees, Newton leaf values and test routing. 40 stages: later, samples
  with equal residuals make equally good thresholds, which rounding decides (differently)."""
  from sklearn.ensemble import GradientBoostingClassifier

  labels = rng.integers(0, num_classes, 300)
  codes = (labels + rng.normal(0, 0.8, 300))[:, None]
  codes_test = rng.normal(1, 1.2, (200, 1))
  _, raw, raw_test = gbt.fit_predict(codes, labels, codes_test, num_classes, rng, num_stages=40)
  model = GradientBoostingClassifier(n_estimators=40).fit(codes, labels)
  for ours, inputs in ((raw, codes), (raw_test, codes_test)):
    theirs = model.decision_function(inputs).reshape(len(inputs), -1)
    if num_classes > 2:  # sklearn starts from the centred log prior: one constant apart
      ours, theirs = ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


def test_dci_fast_equals_exact_within_seed_noise(rng):
  """The fast DCI is exact's estimator: stated tolerance 0.005 (2 decimals) on every value.
  Measured here: D 0.0014, C 0.0012, informativeness 0.001 from exact; exact's own values
  move by 0.003 (D) with its seed, fast's by 0.004 over seeds 0-2."""
  f_train, f_test = _factors(rng, 2000, (3, 4)), _factors(rng, 1000, (3, 4))

  def code(f):
    c = f + rng.normal(0, 0.4, f.shape)
    return np.concatenate([c, c[:, :1] + c[:, 1:], rng.standard_normal((len(f), 1))], 1)

  train, test = code(f_train), code(f_test)
  exact = metrics.dci(train, f_train, test, f_test, mode="exact")
  fast = metrics.dci(train, f_train, test, f_test, mode="fast")
  for key, value in exact.items():
    assert fast[key] == pytest.approx(value, abs=0.005), key


def test_dci_single_valued_factor_is_named(dci_data):
  _, f_train, f_test = dci_data
  f_train = f_train.copy()
  f_train[:, 1] = 2
  with pytest.raises(ValueError, match="factor 1 takes a single value"):
    metrics.dci(f_train + 0.0, f_train, f_test + 0.0, f_test, mode="fast")


def test_svc_solver_matches_liblinear(rng):
  factors = _factors(rng, 500, (4, 2))
  codes = factors + rng.normal(0, 0.7, factors.shape)
  labels, num_classes = linear.encode_labels(factors)
  w, b = svc.fit_linear_svc_1d(codes, labels, num_classes)
  for d, k in itertools.product(range(2), range(2)):
    model = LinearSVC(C=0.01, class_weight="balanced").fit(codes[:, d : d + 1], factors[:, k])
    cols = [1] if num_classes[k] == 2 else list(range(num_classes[k]))
    np.testing.assert_allclose(np.asarray(w[k, d, cols]), model.coef_[:, 0], atol=2e-3)
    np.testing.assert_allclose(np.asarray(b[k, d, cols]), model.intercept_, atol=2e-3)


def test_svc_accuracy_envelope_matches_argmax(rng):
  x = rng.standard_normal((300, 3))
  labels = np.stack([rng.integers(0, 5, 300), rng.integers(0, 2, 300)], axis=1)
  num_classes = np.array([5, 2])
  w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
  w[0, 1, :] = w[0, 1, 0]  # parallel lines: no crossings on dim 1
  accuracy = svc.linear_svc_1d_accuracy(w, b, x, labels, num_classes)
  for d in range(3):
    multi = np.argmax(x[:, d : d + 1] * w[0, d] + b[0, d], axis=1)
    binary = x[:, d] * w[1, d, 1] + b[1, d, 1] > 0
    assert accuracy[d, 0] == pytest.approx(np.mean(multi == labels[:, 0]))
    assert accuracy[d, 1] == pytest.approx(np.mean(binary == labels[:, 1]))


def test_logistic_solver_matches_sklearn(rng):
  factors = _factors(rng, 500, (4, 2))
  codes = (factors + rng.normal(0, 0.7, factors.shape)).astype(np.float32)
  labels, num_classes = linear.encode_labels(factors)
  weights, bias = linear.fit_logistic_regression(codes, labels, num_classes)
  proba = linear.logistic_predict_proba(weights, bias, codes, num_classes)
  for k in range(2):
    expected = LogisticRegression().fit(codes, factors[:, k]).predict_proba(codes)
    np.testing.assert_allclose(proba[k], expected, atol=2e-3)


def test_sap_known_answers_and_fast(rng):
  f_train, f_test = _factors(rng, 800), _factors(rng, 400)
  train, test = _perfect(f_train, rng), _perfect(f_test, rng)
  exact = metrics.sap_score_matrix(train, f_train, test, f_test)
  fast = metrics.sap_score_matrix(train, f_train, test, f_test, mode="fast")
  np.testing.assert_allclose(fast, exact, atol=0.003)  # stated tolerance: one test point
  sap = metrics.sap(train, f_train, test, f_test)["SAP_score"]
  # A 1-D linear one-vs-rest SVC cannot isolate middle values: even a perfect code scores ~0.3.
  assert sap > 0.25
  assert sap == pytest.approx(np.mean(np.sort(exact, 0)[-1] - np.sort(exact, 0)[-2]))
  permuted = metrics.sap(train[:, [1, 2, 0]], f_train, test[:, [1, 2, 0]], f_test)
  assert permuted["SAP_score"] == pytest.approx(sap)
  noise = metrics.sap(rng.standard_normal((800, 3)), f_train, test, f_test, mode="fast")
  assert abs(noise["SAP_score"]) < 0.1


def test_sap_continuous_is_squared_correlation(rng):
  factors = _factors(rng, 300).astype(float)
  codes = factors @ rng.standard_normal((3, 3)) + rng.standard_normal((300, 3))
  expected = [[np.corrcoef(c, f)[0, 1] ** 2 for f in factors.T] for c in codes.T]
  matrix = metrics.sap_score_matrix(codes, factors, codes, factors, continuous_factors=True)
  np.testing.assert_allclose(matrix, expected, atol=1e-12)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_modularity_explicitness_known_answers(rng, mode):
  f_train, f_test = _factors(rng, 1000), _factors(rng, 500)
  train, test = _perfect(f_train, rng), _perfect(f_test, rng)
  scores = metrics.modularity_explicitness(train, f_train, test, f_test, mode=mode)
  assert scores["modularity_score"] > 0.95
  assert scores["explicitness_score_test"] > 0.95
  noise = metrics.modularity_explicitness(
    rng.standard_normal((1000, 3)), f_train, rng.standard_normal((500, 3)), f_test, mode=mode
  )
  assert abs(noise["explicitness_score_test"] - 0.5) < 0.05
  assert noise["modularity_score"] < scores["modularity_score"]


def test_rank_auc_equals_sklearn_with_ties_and_missing_classes(rng):
  from sklearn.metrics import roc_auc_score

  # The package exports the function `explicitness`, which hides the module's name.
  explicitness_module = importlib.import_module("gmg_jax.metrics.explicitness")
  labels = rng.integers(0, 4, 300)  # class 4 never occurs
  classes = np.arange(5)
  proba = rng.dirichlet(np.ones(5), 300)
  proba[:, 1] = np.round(proba[:, 1], 1)  # many ties in one column
  proba[:, 2] = 0.2  # all tied
  one_hot = labels[:, None] == classes[None, :4]
  expected = roc_auc_score(one_hot, proba[:, :4])
  assert explicitness_module._roc_auc_ranks(labels, classes, proba) == pytest.approx(
    expected, abs=1e-12
  )
  assert explicitness_module._roc_auc(labels, classes, proba) == pytest.approx(expected, abs=1e-12)


def test_modularity_explicitness_fast_close_to_exact(rng):
  f_train, f_test = _factors(rng, 1000), _factors(rng, 500)
  train = f_train + rng.normal(0, 1.0, f_train.shape)
  test = f_test + rng.normal(0, 1.0, f_test.shape)
  exact = metrics.modularity_explicitness(train, f_train, test, f_test)
  fast = metrics.modularity_explicitness(train, f_train, test, f_test, mode="fast")
  assert fast["modularity_score"] == pytest.approx(exact["modularity_score"], abs=1e-9)
  for key in ("explicitness_score_train", "explicitness_score_test"):
    assert fast[key] == pytest.approx(exact[key], abs=1e-3)


def test_bad_mode_raises(rng):
  with pytest.raises(ValueError, match="mode"):
    metrics.mig(rng.standard_normal((10, 2)), _factors(rng, 10), mode="approx")


def _explicitness_case(rng, name, dtype):
  """Train/test codes and factors for one fast-vs-exact explicitness case."""
  sizes = {"binary": (2, 3, 2), "many_classes": (25, 2), "constant_dim": (4, 3, 5)}.get(name, SIZES)
  f_train, f_test = _factors(rng, 1200, sizes), _factors(rng, 600, sizes)
  if name == "separable":
    train, test = _perfect(f_train, rng), _perfect(f_test, rng)
  elif name == "structured":  # axis-aligned, monotone, noisy enough to be imperfect
    train = _perfect(f_train, rng) + rng.normal(0, 0.15, f_train.shape)
    test = _perfect(f_test, rng) + rng.normal(0, 0.15, f_test.shape)
  else:
    mix = rng.standard_normal((len(sizes), 4))
    train = f_train @ mix + rng.normal(0, 1.5, (1200, 4))
    test = f_test @ mix + rng.normal(0, 1.5, (600, 4))
  if name == "constant_dim":
    train[:, 1], test[:, 1] = 0.5, 0.5
  return train.astype(dtype), f_train, test.astype(dtype), f_test


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
  "name", ["noisy", "separable", "structured", "binary", "many_classes", "constant_dim"]
)
def test_explicitness_fast_equals_exact_per_factor(rng, name, dtype):
  train, f_train, test, f_test = _explicitness_case(rng, name, dtype)
  exact = metrics.explicitness(train, f_train, test, f_test)
  fast = metrics.explicitness(train, f_train, test, f_test, mode="fast")
  np.testing.assert_allclose(fast[0], exact[0], atol=1e-4)
  np.testing.assert_allclose(fast[1], exact[1], atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logistic_newton_reaches_the_sklearn_optimum(rng, dtype):
  # Factors with 2, 3 and 12 classes (10,000 points: the fit goes through its warm starts),
  # against sklearn run to a far tighter tolerance than its default, in float64 (on float32
  # codes sklearn's L-BFGS works in float32 and stops short of the optimum).
  factors = _factors(rng, 10000, (2, 3, 12))
  codes = factors @ rng.standard_normal((3, 4)) + rng.normal(0, 2.0, (10000, 4))
  codes = ((codes - codes.mean(0)) / codes.std(0)).astype(dtype)
  labels, num_classes = linear.encode_labels(factors)
  weights, bias, proba = linear.fit_logistic_regression(
    codes, labels, num_classes, tolerance=1e-6, return_proba=True
  )
  reference = linear.logistic_predict_proba(weights, bias, codes, num_classes)
  stacked = linear.logistic_proba_stacked(weights, bias, codes, num_classes)
  np.testing.assert_allclose(stacked, proba, atol=1e-5)
  np.testing.assert_allclose(stacked[0], reference[0][:, 1], atol=1e-5)  # binary: class 1
  np.testing.assert_allclose(stacked[1:4].T, reference[1], atol=1e-5)
  for k in range(3):
    model = LogisticRegression(tol=1e-10, max_iter=10000).fit(codes.astype(float), factors[:, k])
    np.testing.assert_allclose(reference[k], model.predict_proba(codes.astype(float)), atol=1e-5)
    coef = model.coef_[0] if num_classes[k] == 2 else model.coef_.T
    got = weights[k, :, 1] if num_classes[k] == 2 else weights[k, :, : num_classes[k]]
    np.testing.assert_allclose(got, coef, atol=1e-4 * max(1.0, np.abs(coef).max()))


def test_logistic_newton_warns_when_not_converged(rng):
  factors = _factors(rng, 400, (3,))
  codes = factors + rng.normal(0, 0.3, factors.shape)
  labels, num_classes = linear.encode_labels(factors)
  with pytest.warns(RuntimeWarning, match="did not reach gradient"):
    linear.fit_logistic_regression(codes, labels, num_classes, num_iterations=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rank_aucs_match_sklearn_with_ties(rng, dtype):
  from sklearn.metrics import roc_auc_score

  explicitness_module = importlib.import_module("gmg_jax.metrics.explicitness")
  scores = rng.random((5, 400)).astype(dtype)
  scores[1] = np.round(scores[1], 1)  # mixed ties
  scores[2] = 0.25  # all tied
  scores[3, :200] = 1.0  # a block of saturated scores, both classes in it
  positive = rng.random((5, 400)) < 0.3
  positive[4] = False  # no positives: no AUC
  got = explicitness_module._rank_aucs(scores, positive)
  expected = [roc_auc_score(p, s) for p, s in zip(positive[:4], scores[:4], strict=True)]
  np.testing.assert_allclose(got[:4], expected, atol=1e-12)
  assert np.isnan(got[4])


def test_explicitness_fast_test_values_unseen_in_training(rng):
  # A test value absent from training is a negative for every class (as in exact mode).
  train, f_train, test, f_test = _explicitness_case(rng, "noisy", np.float32)
  f_test[:50, 0] = 7
  exact = metrics.explicitness(train, f_train, test, f_test)
  fast = metrics.explicitness(train, f_train, test, f_test, mode="fast")
  np.testing.assert_allclose(fast[1], exact[1], atol=1e-4)
