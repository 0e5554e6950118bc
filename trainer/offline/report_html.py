"""The offline report as one self-contained HTML page: tables, and the plots as embedded PNGs,
so it can be mailed, attached to a pull request or opened from a CI artefact without a server.

Rendered with jinja2 (autoescaped: method and bucket names end up in markup) and matplotlib
(Agg, no display needed).
"""

from __future__ import annotations

import base64
import io

import jinja2

LABELS = {"ndcg10": "NDCG@10", "ndcg20": "NDCG@20", "hr10": "HR@10", "hr20": "HR@20", "mrr20": "MRR@20",
          "coverage": "coverage", "diversity": "diversity", "novelty": "novelty", "popularity_bias": "popularity bias"}

TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamrec offline evaluation: {{ r.eval_file }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; } th, td { padding: .3rem .6rem; border-bottom: 1px solid #ddd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } th { text-align: left; background: #f4f4f4; }
.best { font-weight: 600; } .sig { color: #0a6b2b; } .worse { color: #a31515; } .muted { color: #666; }
img { max-width: 100%; }
</style></head><body>
<h1>Offline evaluation</h1>
<p>{{ r.dataset }} · <code>{{ r.eval_file }}</code>: every method ranks all {{ "{:,}".format(r["items"]) }} items
on each of {{ "{:,}".format(r.rows) }} rows, the user's history removed; fit on {{ "{:,}".format(r.fit_sequences) }}
sequences (nothing selected on this file). Beyond-accuracy figures from each row's top 10.
Best baseline: <b>{{ r.best_baseline }}</b>. {{ r.machine.cpu }} ({{ r.machine.cpu_flags }}), {{ r.date }}.</p>

<h2 id="summary">Methods</h2>
<table id="methods"><tr><th>method</th>{% for m in r.metrics_order %}<th>{{ labels[m] }}</th>{% endfor %}<th>seconds</th></tr>
{% for name, method in r.methods.items() %}<tr{% if name == r.best_baseline %} class="best"{% endif %}><td>{{ name }}</td>
{% for m in r.metrics_order %}<td class="num">{{ "%.4f"|format(method.summary[m]) }}{% if m in method.intervals %}
<span class="muted">[{{ "%.4f"|format(method.intervals[m][0]) }}, {{ "%.4f"|format(method.intervals[m][1]) }}]</span>{% endif %}</td>{% endfor %}
<td class="num">{{ method.notes.seconds }}</td></tr>{% endfor %}</table>
<p class="muted">Brackets: 95 % bootstrap (BCa) intervals of the mean over rows.</p>

<h2 id="significance">Against the best baseline ({{ r.best_baseline }})</h2>
<table id="comparisons"><tr><th>method</th><th>metric</th><th>difference</th><th>95 % CI (paired bootstrap)</th><th>ratio</th>
<th>p (paired t)</th><th>p (Holm)</th></tr>
{% for name, comparison in r.comparisons.items() %}{% for metric, c in comparison.items() %}
<tr class="{{ 'sig' if c.ci_low > 0 else ('worse' if c.ci_high < 0 else '') }}"><td>{{ name }}</td><td>{{ labels[metric] }}</td>
<td class="num">{{ "%+.4f"|format(c.difference) }}</td><td class="num">[{{ "%+.4f"|format(c.ci_low) }}, {{ "%+.4f"|format(c.ci_high) }}]</td>
<td class="num">{{ "%.3f"|format(c.relative) }}x</td><td class="num">{{ "%.2g"|format(c.p_value) }}</td>
<td class="num">{{ "%.2g"|format(c.p_value_holm) if c.p_value_holm is defined else "" }}</td></tr>{% endfor %}{% endfor %}</table>

<h2 id="segments">By segment</h2>
<img alt="NDCG@10 by segment" src="data:image/png;base64,{{ plots.segments }}">
{% for grouping, buckets in r.segments.items() %}
<h3>{{ grouping }}</h3>
<table class="segment"><tr><th>{{ grouping }}</th><th>rows</th>{% for name in r.methods %}<th>{{ name }} NDCG@10</th>{% endfor %}</tr>
{% for bucket, entry in buckets.items() %}<tr><td>{{ bucket }}</td><td class="num">{{ entry.rows }}</td>
{% for name in r.methods %}<td class="num">{{ "%.4f"|format(entry[name].ndcg10) }}{% if entry[name].vs_best_baseline is defined %}
<span class="muted">({{ "%+.4f"|format(entry[name].vs_best_baseline.difference) }}, p {{ "%.2g"|format(entry[name].vs_best_baseline.p_value) }})</span>{% endif %}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}
<p class="muted">history: items before the target; user: returning = has a training-file sequence;
target: head = most popular 20 % of seen items, cold = never in a fit sequence. In brackets: the
difference to the best baseline in that segment and its paired p-value (no multiplicity correction).</p>

<h2 id="ranks">Where the true next item landed</h2>
<img alt="rank distribution of the true item" src="data:image/png;base64,{{ plots.ranks }}">
</body></html>
""")


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(report: dict) -> dict[str, str]:
    """Base64 PNGs: NDCG@10 by segment (one panel per grouping), and the rank bands of the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(report["methods"])
    groupings = list(report["segments"])
    figure, axes = plt.subplots(1, len(groupings), figsize=(4.2 * len(groupings), 3.4), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for axis, grouping in zip(axes[0], groupings, strict=True):
        buckets = list(report["segments"][grouping])
        x = np.arange(len(buckets))
        for n, name in enumerate(methods):
            axis.bar(x + n * width - 0.4 + width / 2, [report["segments"][grouping][b][name]["ndcg10"] for b in buckets],
                     width, label=name)
        axis.set_xticks(x, [f"{b}\n({report['segments'][grouping][b]['rows']})" for b in buckets])
        axis.set_title(grouping)
        axis.set_ylabel("NDCG@10")
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    segments = _png(figure)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 3.4))
    bands = list(next(iter(report["methods"].values()))["rank_distribution"])
    x = np.arange(len(bands))
    for n, name in enumerate(methods):
        shares = report["methods"][name]["rank_distribution"]
        axis.bar(x + n * width - 0.4 + width / 2, [shares[b] for b in bands], width, label=name)
    axis.set_xticks(x, bands)
    axis.set_xlabel("rank of the true next item (whole catalog, history removed)")
    axis.set_ylabel("share of rows")
    axis.legend(fontsize=8)
    figure.tight_layout()
    ranks = _png(figure)
    plt.close(figure)
    return {"segments": segments, "ranks": ranks}


def render(report: dict) -> str:
    return TEMPLATE.render(r=report, labels=LABELS, plots=plots(report))
