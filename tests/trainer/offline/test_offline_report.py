"""The offline evaluation report: its metrics against values worked out by hand, its statistics
against scipy-free arithmetic, and the real command on the real Amazon data, read by Chromium."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from streamrec.datasets.sequences import Example
from tests.browser import browse, chromium
from trainer.offline.beyond_accuracy import (
    coverage,
    popularity_percentiles,
    row_diversity,
    row_novelty,
    top_lists,
)
from trainer.offline.evaluation import ROW_METRICS, summarise
from trainer.offline.segments import history_bucket, target_buckets
from trainer.offline.sequence_eval import target_ranks
from trainer.offline.significance import holm, paired


def test_row_metrics_equal_their_definitions():
    ranks = np.array([1, 2, 11, np.inf])
    values = {name: float(function(ranks).mean()) for name, function in ROW_METRICS.items()}
    assert values["ndcg10"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert values["ndcg20"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(12)) / 4)
    assert values["hr10"] == 0.5 and values["hr20"] == 0.75
    assert values["mrr20"] == pytest.approx((1 + 0.5 + 1 / 11) / 4)
    assert summarise(ranks)["ndcg10"] == pytest.approx(values["ndcg10"]), "the gate's summary reads the same code"


def test_top_lists_are_the_lists_the_ranks_describe():
    rng = np.random.default_rng(3)
    n_items = 40
    scores = rng.integers(0, 5, size=(60, n_items)).astype(float)  # many ties
    rows = [Example(f"u{n}", tuple(rng.choice(n_items, size=3, replace=False).tolist()), int(rng.integers(n_items)))
            for n in range(60)]
    ranks = target_ranks(scores, rows, remove_history=True)
    lists = top_lists(scores, rows, 10)
    for row, rank, items in zip(rows, ranks, lists, strict=True):
        assert not set(items) & set(row.history), "a history item was listed"
        if rank <= 10:
            assert items[int(rank) - 1] == row.target
        else:
            assert row.target not in items
    assert np.isinf(ranks).any() or (ranks <= 10).any()


def test_beyond_accuracy_on_known_lists():
    text = np.eye(4)
    same = np.array([[0, 0]])
    assert row_diversity(same, text)[0] == pytest.approx(0.0)
    assert row_diversity(np.array([[0, 1]]), text)[0] == pytest.approx(1.0)
    assert coverage(np.array([[0, 1], [1, 2]]), 4) == 0.75
    np.testing.assert_allclose(popularity_percentiles(np.array([0.0, 1.0, 2.0, 3.0])), [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(popularity_percentiles(np.array([5.0, 5.0, 0.0])), [0.75, 0.75, 0.0])
    # two items seen once each: (1 + 1) / (2 + 2) = 1/2 each, one bit of surprise
    assert row_novelty(np.array([[0, 1]]), np.array([1.0, 1.0]))[0] == pytest.approx(1.0)


def test_paired_comparison_and_holm_against_hand_arithmetic():
    rng = np.random.default_rng(0)
    b = rng.random(400)
    a = b + 0.05 + rng.normal(0, 0.1, 400)
    result = paired(a, b, resamples=1000)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert result.difference == pytest.approx(d.mean())
    assert result.low < d.mean() < result.high and result.low > 0, "the interval holds the true gain, not 0"
    # two-sided p of a t statistic with n - 1 = 399 degrees of freedom: at |t| this large, far below 1e-6
    assert t > 8 and result.p_value < 1e-6
    same = paired(b, b)
    assert (same.difference, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    noise = paired(rng.random(300), rng.random(300), resamples=1000)
    assert noise.low < 0 < noise.high
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert adjusted == pytest.approx({"d": 0.02, "a": 0.03, "c": 0.06, "b": 0.06})


def test_segments():
    assert [history_bucket(n) for n in (1, 2, 3, 4, 7, 8, 50)] == ["1", "2-3", "2-3", "4-7", "4-7", "8+", "8+"]
    labels = target_buckets(np.array([0.0, 5.0, 1.0, 1.0, 1.0]))
    assert list(labels) == ["cold", "head", "tail", "tail", "tail"]


def test_the_command_writes_a_report_a_browser_renders(tmp_path, data_dir):
    """The real command on the first 400 validation rows (fit on everything before them)."""
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "streamrec", "eval", "offline", "--data-dir", str(data_dir), "--out", str(out),
         "--methods", "popularity,covisit,text_similarity", "--rows", "400", "--resamples", "300"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((out / "offline-report.json").read_text())
    metrics, report = data["metrics"], data["report"]
    assert report["rows"] == 400 and report["items"] > 1000
    assert report["best_baseline"] == "covisit", "co-visitation leads popularity on Amazon Scientific"
    assert metrics["ndcg10_covisit"] > metrics["ndcg10_popularity"]
    assert metrics["popularity_bias_popularity"] > 0.99 > metrics["popularity_bias_text_similarity"]
    assert metrics["coverage_popularity"] < metrics["coverage_text_similarity"]
    low, high = report["methods"]["covisit"]["intervals"]["ndcg10"]
    assert low < metrics["ndcg10_covisit"] < high
    assert report["comparisons"]["popularity"]["ndcg10"]["p_value"] < 0.05
    assert sum(report["segments"]["history"][b]["rows"] for b in report["segments"]["history"]) == 400
    for method in report["methods"].values():
        assert sum(method["rank_distribution"].values()) == pytest.approx(1.0)

    html = (out / "offline-report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 2
    for encoded in images:
        width, height = Image.open(io.BytesIO(base64.b64decode(encoded))).size
        assert width > 400 and height > 200
    dom = browse(chromium(), (out / "offline-report.html").as_uri(), "--dump-dom", budget_ms=2000)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="methods"' in dom.stdout and 'id="comparisons"' in dom.stdout
    assert dom.stdout.count("<tr") >= 4 + 3 * 2 + 4 + 2 + 3, "the method, comparison and segment tables have rows"
