"""The routing metrics on examples small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.training.router import metrics

# Four prompts; routing by score sends 0, 1, 2, 3 to the strong model in that order, gaining
# +1, 0, +1, -1 correct answers: Q = 0.5, 0.75, 0.75, 1.0, 0.75 at shares 0, 1/4, ... 1.
SCORES = [0.9, 0.7, 0.5, 0.1]
WEAK = [0, 1, 0, 1]
STRONG = [1, 1, 1, 0]


def test_curve_points() -> None:
    c = metrics.curve(SCORES, WEAK, STRONG)
    assert c.share.tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert c.quality.tolist() == [0.5, 0.75, 0.75, 1.0, 0.75]
    assert c.pgr.tolist() == [0, 1, 1, 2, 1]


def test_apgr_is_the_trapezoid_area() -> None:
    c = metrics.curve(SCORES, WEAK, STRONG)
    # 0.25 * ((0+1)/2 + (1+1)/2 + (1+2)/2 + (2+1)/2)
    assert metrics.apgr(c) == pytest.approx(1.125)


def test_cpt_interpolates_to_the_first_crossing() -> None:
    c = metrics.curve(SCORES, WEAK, STRONG)
    assert metrics.cpt(c, 0.5) == pytest.approx(0.125)
    assert metrics.cpt(c, 0.8) == pytest.approx(0.2)
    assert metrics.cpt(c, 2.0) == pytest.approx(0.75)
    assert math.isnan(metrics.cpt(c, 2.5))


def test_share_for_quality() -> None:
    c = metrics.curve(SCORES, WEAK, STRONG)
    # 95% of 0.75 is 0.7125, PGR 0.85, reached at 0.85 / 4 of the way
    assert metrics.share_for_quality(c, 0.95) == pytest.approx(0.2125)


def test_ties_form_one_step() -> None:
    c = metrics.curve([1, 1, 0, 0], [0, 1, 0, 1], [1, 1, 0, 1])
    assert c.share.tolist() == [0, 0.5, 1]
    assert metrics.apgr(c) == pytest.approx(0.75)


def test_random_router_is_the_diagonal() -> None:
    r = metrics.random_report(WEAK, STRONG)
    assert (r.apgr, r.cpt50, r.cpt80) == pytest.approx((0.5, 0.5, 0.8))
    assert r.share95 == pytest.approx(0.85)


def test_a_perfect_ranking_beats_random() -> None:
    rng = np.random.default_rng(0)
    weak = rng.integers(0, 2, 500)
    strong = np.maximum(weak, rng.integers(0, 2, 500))
    perfect = metrics.report(strong - weak, weak, strong)
    # the gain is reached at share p = P(gain) and held: APGR = 1 - p / 2
    assert perfect.apgr == pytest.approx(1 - (strong - weak).mean() / 2)
    assert perfect.cpt80 < 0.5


def test_no_gap_gives_nan() -> None:
    assert math.isnan(metrics.report([0.1, 0.2], [1, 0], [1, 0]).apgr)


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError):
        metrics.curve([0.1], [1, 0], [1, 0])
