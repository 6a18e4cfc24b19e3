"""Contract test, parametrised over every registered combiner, on tiny 2D and 3D outputs.

Every combiner maps member probabilities ``[E, N, C, *spatial]`` to ``[N, C, *spatial]``
that sum to one over ``C``, respects per-member weights when it takes them, and learns
(if at all) from validation data passed to ``fit`` only.
"""

from __future__ import annotations

import inspect
import json
import warnings

import numpy as np
import pytest
import torch

from medxfer.errors import ConfigError
from medxfer.plugins import PluginLoadWarning, build_registries, create_plugin_manager

BUILT_IN = {"mean", "vote", "weighted", "stacking"}
E, N, C = 3, 12, 4


def _combiner_entries():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # other kinds may be unfinished
        return build_registries(create_plugin_manager()).combiner.entries()


ENTRIES = _combiner_entries()


@pytest.fixture(params=ENTRIES, ids=[e.name for e in ENTRIES])
def entry(request):
    return request.param


def member_probs(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random member probabilities ``[E, N, C, *spatial]`` (softmax over axis 2)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(*shape, generator=generator, dtype=torch.float64), dim=2)


def labels(n: int, num_classes: int = C, seed: int = 1) -> torch.Tensor:
    """Labels with every class present."""
    y = torch.arange(n) % num_classes
    return y[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


class _Fitted:
    """A registered combiner, fitted when it has ``fit``; a plain ``combine(outputs,
    weights=None)`` callable (the minimal plugin) is used as it is."""

    def __init__(self, combiner):
        self.combiner = combiner
        self.supports_spatial = getattr(combiner, "supports_spatial", True)
        self.accepts_weights = getattr(combiner, "accepts_weights", True)

    def fit(self, *args):
        if callable(getattr(self.combiner, "fit", None)):
            self.combiner.fit(*args)
        return self

    def combine(self, outputs):
        return (getattr(self.combiner, "combine", None) or self.combiner)(outputs)

    def __call__(self, outputs, weights=None):
        return self.combiner(outputs, weights=weights)


def fitted(entry, val: torch.Tensor, y_val: torch.Tensor, **options) -> _Fitted:
    """The combiner built with ``options`` and fitted on validation data (no scores)."""
    return _Fitted(entry.factory(**options)).fit(val, y_val, None)


def test_built_in_combiners_are_registered():
    assert BUILT_IN <= {e.name for e in ENTRIES}
    for e in ENTRIES:
        if e.name in BUILT_IN:
            assert e.distribution == "medxfer" and e.description


def test_combiner_object_contract(entry):
    combiner = entry.factory()
    assert callable(combiner)
    if hasattr(combiner, "describe"):
        description = combiner.describe()
        assert description["name"] == entry.name
        json.dumps(description)  # goes into ensemble.json as is
    if hasattr(combiner, "combine"):
        params = inspect.signature(combiner.combine).parameters
        assert list(params) == ["outputs"]  # combine() cannot be given labels
    if hasattr(combiner, "fit"):
        assert list(inspect.signature(combiner.fit).parameters) == [
            "val_outputs", "val_targets", "member_scores"]


def test_classification_shape_and_sums_to_one(entry):
    val, test = member_probs(E, N, C, seed=0), member_probs(E, 7, C, seed=1)
    combined = fitted(entry, val, labels(N)).combine(test)
    assert isinstance(combined, torch.Tensor)
    assert tuple(combined.shape) == (7, C)
    assert torch.allclose(combined.sum(dim=1), torch.ones(7, dtype=combined.dtype), atol=1e-6)
    assert float(combined.min()) >= 0.0


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)], ids=["2d", "3d"])
def test_spatial_shape_and_sums_to_one(entry, spatial):
    val, test = member_probs(E, 2, C, *spatial, seed=0), member_probs(E, 2, C, *spatial, seed=3)
    y_val = labels(2 * int(np.prod(spatial))).reshape(2, 1, *spatial)
    combiner = _Fitted(entry.factory())
    if not combiner.supports_spatial:
        with pytest.raises(ConfigError, match="classification"):
            combiner.fit(val, y_val, None)
        with pytest.raises(ConfigError, match="classification"):
            combiner.combine(test)
        return
    combiner.fit(val, y_val, None)
    combined = combiner.combine(test)
    assert tuple(combined.shape) == (2, C, *spatial)
    assert torch.allclose(combined.sum(dim=1), torch.ones(2, *spatial, dtype=combined.dtype),
                          atol=1e-6)


def test_numpy_and_lists_give_the_same_result(entry):
    if entry.distribution != "medxfer":
        pytest.skip("numpy and list inputs are a convenience of the built-in combiners")
    val, test = member_probs(E, N, C, seed=0), member_probs(E, 6, C, seed=1)
    combiner = fitted(entry, val, labels(N))
    expected = combiner.combine(test)
    assert torch.allclose(combiner.combine(test.numpy()), expected)
    assert torch.allclose(combiner.combine([m.numpy() for m in test]), expected)
    assert torch.allclose(combiner.combine(test.float()).double(), expected, atol=1e-5)


def test_inputs_are_left_unchanged_and_results_repeat(entry):
    val, test = member_probs(E, N, C, seed=0), member_probs(E, 6, C, seed=1)
    before = test.clone()
    combiner = fitted(entry, val, labels(N))
    first = combiner.combine(test)
    assert torch.equal(test, before)
    assert torch.equal(combiner.combine(test), first)


def test_weights_are_respected(entry):
    val, test = member_probs(E, N, C, seed=0), member_probs(E, 9, C, seed=4)
    combiner = fitted(entry, val, labels(N))
    if not combiner.accepts_weights:
        with pytest.raises(ConfigError, match="takes no weights"):
            combiner(test, weights=[1, 0, 0])
        return
    only_first = combiner(test, weights=[1, 0, 0])
    assert torch.equal(only_first.argmax(dim=1), test[0].argmax(dim=1))
    only_last = combiner(test, weights=[0, 0, 2])
    assert torch.equal(only_last.argmax(dim=1), test[2].argmax(dim=1))
    with pytest.raises(ConfigError, match="one per member"):
        combiner(test, weights=[1, 1])


def test_outputs_that_are_not_probabilities_are_refused(entry):
    combiner = fitted(entry, member_probs(E, N, C), labels(N))
    logits = torch.randn(E, 5, C, generator=torch.Generator().manual_seed(0)) * 3
    with pytest.raises(ValueError, match="probabilities"):
        combiner.combine(logits)
    with pytest.raises(ValueError, match=r"\[E, N, C"):
        combiner.combine(torch.full((5, C), 1.0 / C))


def test_fit_sees_only_what_it_is_given(entry):
    """Fitting twice on the same validation data gives the same combiner; combining test
    outputs afterwards does not change what was learnt."""
    val, test = member_probs(E, N, C, seed=0), member_probs(E, 8, C, seed=5)
    a = fitted(entry, val, labels(N))
    b = fitted(entry, val.clone(), labels(N))
    probe = member_probs(E, 4, C, seed=9)
    assert torch.allclose(a.combine(probe), b.combine(probe))
    a.combine(test)
    assert torch.allclose(a.combine(probe), b.combine(probe))


# ---------------------------------------------------------------------------------------
# per combiner
# ---------------------------------------------------------------------------------------


def _create(name: str, **options):
    return build_registries(create_plugin_manager()).combiner.create(name, **options)


def test_mean_is_the_member_average_and_weights_select_members():
    test = member_probs(E, N, C, seed=2)
    combiner = _create("mean")
    assert torch.allclose(combiner.combine(test), test.mean(dim=0))
    assert torch.allclose(_create("mean", weights=[1, 0, 0]).combine(test), test[0])
    expected = (2 * test[0] + test[1] + test[2]) / 4
    assert torch.allclose(_create("mean", weights=[2, 1, 1]).combine(test), expected)
    with pytest.raises(ConfigError, match="'weights'"):
        _create("mean", weights=[1, -1, 0])
    with pytest.raises(ConfigError, match="positive"):
        _create("mean", weights=[0, 0, 0])


def test_weighted_uses_validation_scores_or_explicit_weights():
    val, test = member_probs(E, N, C, seed=0), member_probs(E, 6, C, seed=1)
    explicit = _create("weighted", weights=[1, 0, 0])
    assert torch.allclose(explicit.combine(test), test[0])  # needs no fit
    scored = _create("weighted").fit(val, labels(N), [0.9, 0.6, 0.3])
    assert scored.describe()["weights_used"] == pytest.approx([0.5, 1 / 3, 1 / 6])
    expected = 0.5 * test[0] + test[1] / 3 + test[2] / 6
    assert torch.allclose(scored.combine(test), expected)
    sharper = _create("weighted", power=2).fit(val, labels(N), [0.9, 0.6, 0.3])
    assert sharper.describe()["weights_used"][0] > 0.6
    # Without scores, each member's validation accuracy is the score.
    y = labels(N)
    perfect = torch.nn.functional.one_hot(y, C).double() * 0.7 + 0.3 / C
    accurate = torch.stack([perfect, member_probs(1, N, C, seed=7)[0], perfect])
    accuracy_weights = _create("weighted").fit(accurate, y, None).describe()["weights_used"]
    assert accuracy_weights[0] == accuracy_weights[2] > accuracy_weights[1]
    with pytest.warns(UserWarning, match="equally"):
        equal = _create("weighted").fit(None, None, [0.0, float("nan"), None])
    assert equal.describe()["weights_used"] == pytest.approx([1 / 3] * 3)


def test_weighted_refuses_to_combine_before_it_has_weights():
    with pytest.raises(RuntimeError, match="fit"):
        _create("weighted").combine(member_probs(E, 4, C))
    with pytest.raises(ConfigError, match="validation scores"):
        _create("weighted").fit(None, None, None)


def test_vote_follows_the_majority_not_the_most_confident_member():
    # Members 0 and 1 mildly prefer class 2; member 2 is sure of class 0.
    mild = torch.tensor([0.2, 0.1, 0.4, 0.3], dtype=torch.float64)
    sure = torch.tensor([0.97, 0.01, 0.01, 0.01], dtype=torch.float64)
    outputs = torch.stack([mild, mild, sure])[:, None]  # [3, 1, 4]
    assert int(_create("mean").combine(outputs).argmax()) == 0
    shares = _create("vote").combine(outputs)[0]
    assert int(shares.argmax()) == 2
    assert float(shares[2]) == pytest.approx(2 / 3, abs=2e-3)
    assert float(shares[0]) == pytest.approx(1 / 3, abs=2e-3)
    onehot = _create("vote", output="onehot").combine(outputs)[0]
    assert onehot.tolist() == [0.0, 0.0, 1.0, 0.0]
    # Weights count votes: member 2 alone outweighs the other two.
    assert int(_create("vote", weights=[1, 1, 3]).combine(outputs).argmax()) == 0


def test_vote_tie_goes_to_the_higher_mean_probability():
    a = torch.tensor([0.55, 0.45], dtype=torch.float64)
    b = torch.tensor([0.05, 0.95], dtype=torch.float64)
    outputs = torch.stack([a, b])[:, None]  # one vote each; class 1 has the higher mean
    shares = _create("vote").combine(outputs)[0]
    assert int(shares.argmax()) == 1
    assert float(shares.sum()) == pytest.approx(1.0)


def test_vote_is_per_voxel_for_segmentation():
    maps = torch.zeros(3, 1, 2, 2, 2, dtype=torch.float64)
    maps[:, :, 0] = 0.8
    maps[:, :, 1] = 0.2
    maps[0, 0, :, 0, 0] = torch.tensor([0.1, 0.9])
    maps[1, 0, :, 0, 0] = torch.tensor([0.3, 0.7])  # two of three vote foreground at (0, 0)
    voted = _create("vote", output="onehot").combine(maps)
    assert voted[0].argmax(dim=0).tolist() == [[1, 0], [0, 0]]
    with pytest.raises(ConfigError, match="'output'"):
        _create("vote", output="majority")


def test_stacking_refuses_to_combine_before_fit():
    with pytest.raises(RuntimeError, match="fit"):
        _create("stacking").combine(member_probs(E, 4, C))


def test_stacking_fits_on_validation_only(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    seen: dict[str, list[int]] = {"fit": [], "predict_proba": []}
    original_fit, original_predict = LogisticRegression.fit, LogisticRegression.predict_proba

    def spy_fit(self, X, y, *args, **kwargs):
        seen["fit"].append(len(X))
        assert len(y) == len(X)
        return original_fit(self, X, y, *args, **kwargs)

    def spy_predict(self, X):
        seen["predict_proba"].append(len(X))
        return original_predict(self, X)

    monkeypatch.setattr(LogisticRegression, "fit", spy_fit)
    monkeypatch.setattr(LogisticRegression, "predict_proba", spy_predict)
    n_val, n_test = 30, 11
    val, y_val = member_probs(E, n_val, C, seed=0), labels(n_val)
    combiner = _create("stacking").fit(val, y_val, None)
    coef = combiner.model.coef_.copy()
    combiner.combine(member_probs(E, n_test, C, seed=1))  # test outputs, no labels anywhere
    assert seen == {"fit": [n_val], "predict_proba": [n_test]}
    assert np.array_equal(combiner.model.coef_, coef)
    assert combiner.describe()["fit_cases"] == n_val


def test_stacking_learns_which_member_to_trust():
    # Member 1 knows the label; members 0 and 2 are noise. Stacking finds member 1.
    def split(n, seed):
        y = labels(n, seed=seed)
        informative = torch.nn.functional.one_hot(y, C).double() * 0.6 + 0.4 / C
        noise = member_probs(2, n, C, seed=seed + 10)
        return torch.stack([noise[0], informative, noise[1]]), y

    val, y_val = split(80, 0)
    test, y_test = split(40, 1)
    combined = _create("stacking", C=10.0).fit(val, y_val, None).combine(test)
    assert float((combined.argmax(dim=1) == y_test).double().mean()) == 1.0


def test_stacking_needs_two_classes_and_checks_options():
    with pytest.raises(ConfigError, match="two"):
        _create("stacking").fit(member_probs(E, 6, C), torch.zeros(6, dtype=torch.long), None)
    with pytest.raises(ConfigError, match="'C'"):
        _create("stacking", C=0)
    with pytest.raises(ConfigError, match="class_weight"):
        _create("stacking", class_weight="auto")
    # A class absent from validation gets probability 0 (and the rest still sum to one).
    y = torch.tensor([0, 1, 2] * 4)
    combined = _create("stacking").fit(member_probs(E, 12, C), y, None).combine(
        member_probs(E, 5, C, seed=3))
    assert torch.all(combined[:, 3] == 0)
    assert torch.allclose(combined.sum(dim=1), torch.ones(5, dtype=combined.dtype))
