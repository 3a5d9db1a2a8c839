"""Class biases for macro F1: tuned by coordinate ascent, reported on held-out people."""

from __future__ import annotations

import numpy as np

from fastmask.bias import biased_answers, honest_bias, joint_log_probs, tune_bias
from fastmask.combine import answers
from fastmask.metrics import macro_f1


def under_predicted(n_people: int = 120, seed: int = 0):
    """18-class log-probabilities in which class 4 is pushed down: argmax rarely picks it."""
    rng = np.random.default_rng(seed)
    people = np.repeat(np.arange(n_people), 7)
    truth = rng.integers(0, 18, len(people))
    logp = rng.normal(0, 1.0, (len(people), 18))
    logp[np.arange(len(people)), truth] += 2.5
    logp[:, 4] -= 2.5
    return logp, truth, people


def test_tuning_raises_macro_f1_where_a_class_is_under_predicted():
    logp, truth, people = under_predicted()
    before = macro_f1(truth, biased_answers(logp), 18)
    bias = tune_bias(logp, truth)
    after = macro_f1(truth, biased_answers(logp, bias), 18)
    assert after > before + 0.03
    assert bias[4] > 1.0  # the under-predicted class is the one raised
    report = honest_bias(logp, truth, people, seed=0)
    assert len(report["halves"]) == 2 and {h["fit_half"] for h in report["halves"]} == {"A", "B"}
    for half in report["halves"]:
        assert half["fit_people"] + half["heldout_people"] == 120
        assert half["heldout_after"] > half["heldout_before"]  # held out, and still better
    assert report["applied"] and report["heldout_gain"] > 0
    assert report["oof_after_in_sample"] >= report["oof_before"]


def test_zero_bias_is_each_heads_argmax():
    rng = np.random.default_rng(1)
    probs = {h: rng.dirichlet(np.ones(k), 50) for h, k in (("mask", 3), ("gender", 2), ("age", 3))}
    assert np.array_equal(
        biased_answers(joint_log_probs(probs), np.zeros(18)), answers(probs, None)
    )


def test_no_gain_is_not_applied():
    rng = np.random.default_rng(2)
    people = np.repeat(np.arange(60), 7)
    truth = rng.integers(0, 18, len(people))
    logp = np.full((len(people), 18), -5.0)
    logp[np.arange(len(people)), truth] = 0.0  # already perfect: nothing to gain
    report = honest_bias(logp, truth, people)
    assert report["heldout_gain"] == 0 and not report["applied"]
    assert report["bias"] == [0.0] * 18
