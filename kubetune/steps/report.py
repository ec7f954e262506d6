"""The evaluation report: a self-contained HTML page (inline SVG chart, no scripts) that the KFP UI renders."""

from __future__ import annotations

from html import escape

from kubetune.steps.curve import LossCurve

WIDTH, HEIGHT, PAD = 720, 380, 56
CSS = "body{font-family:sans-serif;margin:24px} table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:4px 10px}"
STYLES = {
    "train loss": 'stroke="#9e9e9e" stroke-width="1.5"',
    "validation loss": 'stroke="#1565c0" stroke-width="2.5"',
    "backend validation loss": 'stroke="#ef6c00" stroke-width="2" stroke-dasharray="6 4"',
}


def svg_chart(lines: dict[str, list[tuple[float, float]]], x_label: str, marks: dict[str, float]) -> str:
    """Lines of (x, loss) points on shared axes, and labelled vertical marks (best, overfitting)."""
    points = [pt for line in lines.values() for pt in line]
    if not points:
        return "<p>No loss values to plot.</p>"
    xs, ys = [x for x, _ in points] + list(marks.values()), [y for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    y0, y1 = y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0)

    def px(x: float) -> float:
        return round(PAD + (x - x0) / (x1 - x0) * (WIDTH - 2 * PAD), 1)

    def py(y: float) -> float:
        return round(HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD), 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="loss curves">',
        f'<rect x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}" fill="none" stroke="#ccc"/>',
    ]
    for i in range(5):  # y grid with values
        y = y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{PAD - 6}" y="{py(y) + 4}" font-size="11" text-anchor="end">{y:.3f}</text>')
        parts.append(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{py(y)}" y2="{py(y)}" stroke="#eee"/>')
    parts.append(f'<text x="{PAD}" y="{HEIGHT - PAD + 18}" font-size="11">{x0:g}</text>')
    parts.append(f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 18}" font-size="11" text-anchor="end">{x1:g}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - PAD + 22}" font-size="12" text-anchor="middle">{escape(x_label)}</text>')
    for i, (label, x) in enumerate(marks.items()):
        color = "#2e7d32" if label.startswith("best") else "#c62828"
        dashed = f'stroke="{color}" stroke-dasharray="3 3"'
        parts.append(f'<line class="mark" x1="{px(x)}" x2="{px(x)}" y1="{PAD}" y2="{HEIGHT - PAD}" {dashed}/>')
        right = px(x) > WIDTH / 2  # labels near the right edge go left of their line
        anchor = f'x="{px(x) - 4}" text-anchor="end"' if right else f'x="{px(x) + 4}"'
        parts.append(f'<text {anchor} y="{PAD - 6 - 16 * i}" font-size="11" fill="{color}">{escape(label)}</text>')
    for k, (label, line) in enumerate(lines.items()):
        if not line:
            continue
        coords = " ".join(f"{px(x)},{py(y)}" for x, y in sorted(line))
        parts.append(f'<polyline class="{label.replace(" ", "-")}" fill="none" {STYLES[label]} points="{coords}"/>')
        if label == "validation loss":
            parts += [f'<circle cx="{px(x)}" cy="{py(y)}" r="3.5" fill="#1565c0"/>' for x, y in line]
        x, y = PAD + 200 * k, HEIGHT - 12  # legend row under the axis: a stroke sample, then the name
        parts.append(f'<line x1="{x}" x2="{x + 24}" y1="{y - 4}" y2="{y - 4}" {STYLES[label]}/>')
        parts.append(f'<text x="{x + 30}" y="{y}" font-size="12">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def html_report(curve: LossCurve) -> str:
    """The whole page: verdict, chart, and one table row per evaluated checkpoint."""
    best, over, at = curve.best, curve.overfitting, curve.at
    lines = {
        "train loss": [(p.x, p.loss) for p in curve.backend.train if p.x is not None],
        "validation loss": [(at(p), p.loss) for p in curve.points if at(p) is not None],
        "backend validation loss": [(p.x, p.loss) for p in curve.backend.validation if p.x is not None],
    }
    marks = {}
    if at(best) is not None:
        marks[f"best: {best.checkpoint}"] = at(best)
    if over and at(over) is not None:
        marks[f"overfitting after {over.checkpoint}"] = at(over)
    verdict = f"Best checkpoint: <b>{escape(best.checkpoint)}</b>, validation loss {best.loss:.4f}."
    verdict += (
        f" Overfitting starts after <b>{escape(over.checkpoint)}</b>: validation loss rose for {curve.patience}"
        " evaluations in a row while train loss kept falling."
        if over
        else " No overfitting seen."
    )
    rows = "\n".join(
        f"<tr><td>{escape(p.checkpoint)}</td><td>{p.step if p.step is not None else ''}</td>"
        f"<td>{p.samples if p.samples is not None else ''}</td><td>{p.loss:.4f}</td>"
        f"<td>{p.perplexity:.2f}</td><td>{p.tokens}</td></tr>"
        for p in curve.points
    )
    skipped = "\n".join(f'<p class="skipped">{escape(line)}</p>' for line in curve.skipped)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kubetune validation loss</title>
<style>{CSS}</style>
</head><body>
<h2>Validation loss per checkpoint</h2>
<p>{verdict}</p>
{skipped}
{svg_chart(lines, curve.axis, marks)}
<p>Validation loss: mean cross-entropy over learned (assistant) tokens of the held-out set, measured by kubetune
on every checkpoint the same way for every backend. Train loss and backend validation loss come from the
backend's own metrics ({escape(curve.backend.backend or "none found")}).</p>
<table><tr><th>checkpoint</th><th>step</th><th>samples</th><th>validation loss</th><th>perplexity</th><th>tokens</th></tr>
{rows}
</table></body></html>
"""
