#!/usr/bin/env python3
"""Training curves from a metrics.jsonl as a self-contained SVG (standard library only).

    scripts/plot_metrics.py RUN/metrics.jsonl OUT.svg [key ...]

Default keys: loss, focus/rewards/margins, robust/rewards/margins, focus/rewards/accuracies.
Each key gets its own panel (own y-axis) over the optimizer step.
"""
import json
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, out = sys.argv[1], sys.argv[2]
    keys = sys.argv[3:] or ["loss", "focus/rewards/margins", "robust/rewards/margins", "focus/rewards/accuracies"]
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not JSON ({e})")
    keys = [k for k in keys if any(k in r for r in rows)]
    if not rows or not keys:
        sys.exit(f"{path}: no metrics to plot")
    pw, ph, pad = 360, 220, 48
    cols = 2
    nrows = (len(keys) + cols - 1) // cols
    width, height = cols * pw, nrows * ph
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>']
    for i, key in enumerate(keys):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        x0, y0 = (i % cols) * pw, (i // cols) * ph
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        xmin, xmax = min(xs), max(xs)
        ymin, ymax = min(ys), max(ys)
        if ymax == ymin:
            ymax = ymin + 1
        if xmax == xmin:
            xmax = xmin + 1
        def sx(x):
            return x0 + pad + (x - xmin) / (xmax - xmin) * (pw - 1.5 * pad)
        def sy(y):
            return y0 + ph - pad + (y - ymin) / (ymax - ymin) * -(ph - 1.5 * pad)
        svg.append(f'<text x="{x0 + pw / 2}" y="{y0 + 16}" text-anchor="middle" font-weight="bold">{key}</text>')
        svg.append(f'<line x1="{sx(xmin)}" y1="{sy(ymin)}" x2="{sx(xmax)}" y2="{sy(ymin)}" stroke="#888"/>')
        svg.append(f'<line x1="{sx(xmin)}" y1="{sy(ymin)}" x2="{sx(xmin)}" y2="{sy(ymax)}" stroke="#888"/>')
        for v in (ymin, (ymin + ymax) / 2, ymax):
            svg.append(f'<text x="{sx(xmin) - 4}" y="{sy(v) + 4}" text-anchor="end">{v:.3g}</text>')
        for v in (xmin, xmax):
            svg.append(f'<text x="{sx(v)}" y="{sy(ymin) + 14}" text-anchor="middle">{v:g}</text>')
        svg.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph - 8}" text-anchor="middle">step</text>')
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        svg.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    svg.append("</svg>")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(svg) + "\n")
    import os
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
