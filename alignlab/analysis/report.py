"""`alignlab report RUN_DIR [--vs RUN_DIR] [--out FILE]`: one self-contained HTML page of a run.

The page gathers the run's config, its training curves (metrics.jsonl; the --vs run overlaid), the
latest samples, evaluation summaries (eval/*.summary.json) and every analysis written under
RUN_DIR/analysis/ (JSON tables and figures). Figures are embedded as base64 PNG and the page has
no script and no external reference, so it opens offline and nothing is fetched.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
from pathlib import Path

from . import common as C

MAX_CURVES = 16
MAX_SAMPLES = 8

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top;text-align:left}th{background:#f3f3f3}figure{display:inline-block;margin:.4em}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.8em;color:#555}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em}td.txt{max-width:420px;white-space:pre-wrap}
.muted{color:#777}"""


def _esc(x) -> str:
    return html.escape(str(x))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and len(v) > 8:
        return _esc(f"[{', '.join(_fmt(x) for x in v[:8])}, … ({len(v)})]")
    return _esc(v)


def table(rows: list[dict], cols: list[str] | None = None, caption: str = "", text_cols: tuple = ()) -> str:
    if not rows:
        return ""
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td class='txt'>{_esc(r.get(c, ''))}</td>" if c in text_cols
                                    else f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    return f"<table class='tbl'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img(png: bytes, caption: str) -> str:
    b64 = base64.b64encode(png).decode()
    return (f"<figure class='fig'><img alt='{_esc(caption)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _fig_png(fig) -> bytes:
    plt = C.pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _metrics(run: Path) -> list[dict]:
    from ..tracking import read_metrics

    return read_metrics(run)


def curves(runs: list[Path]) -> str:
    """One small plot per numeric metric key, every run overlaid."""
    plt = C.pyplot()
    data = [(r.name, _metrics(r)) for r in runs]
    keys = list(dict.fromkeys(k for _, rows in data for row in rows for k, v in row.items()
                              if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)))
    if not keys:
        return "<p class='muted'>no metrics.jsonl rows</p>"
    parts = []
    for k in keys[:MAX_CURVES]:
        fig, ax = plt.subplots(figsize=(3.4, 2.3))
        for name, rows in data:
            pts = [(row["step"], row[k]) for row in rows if isinstance(row.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=name)
        ax.set_title(k, fontsize=9), ax.set_xlabel("step", fontsize=8), ax.tick_params(labelsize=7)
        if len(data) > 1:
            ax.legend(fontsize=7)
        parts.append(img(_fig_png(fig), k))
    more = f"<p class='muted'>{len(keys) - MAX_CURVES} more metrics not plotted</p>" if len(keys) > MAX_CURVES else ""
    return "".join(parts) + more


def samples(run: Path) -> str:
    files = sorted((run / "samples").glob("step_*.jsonl"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        return ""
    rows = [json.loads(x) for x in files[-1].read_text().splitlines()[:MAX_SAMPLES] if x.strip()]
    rows = [{k: (v if isinstance(v, (int, float, str)) else json.dumps(v))[:600] if isinstance(v, str) else v
             for k, v in r.items()} for r in rows]
    text_cols = tuple(k for r in rows for k, v in r.items() if isinstance(v, str))
    return table(rows, caption=f"{files[-1].name} (first {len(rows)})", text_cols=text_cols)


def evals(run: Path) -> str:
    parts = []
    for p in sorted((run / "eval").glob("*.summary.json")):
        s = json.loads(p.read_text())
        rows = [{"metric": k, **v} for k, v in s.get("metrics", {}).items()]
        parts.append(table(rows, caption=f"{p.name}: model {s.get('model', '')}"))
    return "".join(parts)


# How each analysis's JSON becomes tables: the rows a reader wants first.
def _analysis_tables(kind: str, d: dict) -> str:
    if kind == "weights":
        return (table(d.get("layers", []), ["layer", "layer_type", "rel_change", "rank"], "change per layer")
                + table([{"layer_type": k, **v} for k, v in d.get("by_layer_type", {}).items()],
                        caption="by layer type"))
    if kind == "attention":
        out = ""
        for label in ("base", "tuned"):
            if d.get(label):
                out += table([{"layer_type": k, **v} for k, v in d[label]["by_layer_type"].items()],
                             caption=f"{label}: mean over heads by layer type")
        return out
    if kind == "activations":
        out = ""
        for label in ("model", "vs"):
            if d.get(label):
                out += table(d[label]["layers"], caption=f"{label}: residual stream per layer")
        if d.get("grad_flow"):
            out += table(d["grad_flow"]["layers"], caption="gradient norm per layer (mean over steps)")
        return out
    if kind == "capacity":
        return (table(d.get("runs", []), caption="memorisation runs")
                + table(d.get("capacity", []), caption="capacity per model size"))
    if kind == "memory":
        return table(d.get("phases", []), caption=f"peak memory per phase ({d.get('device', '')})")
    if kind == "rank_trajectory":
        rows = [{"run": run, "module": m, "last step": pts[-1][0], d.get("measure", "value"): pts[-1][1]}
                for run, mods in d.get("runs", {}).items() for m, pts in mods.items() if pts]
        return table(rows, caption=f"{d.get('measure', '')} of ΔW at the last measured step")
    return f"<pre>{_esc(json.dumps(d, indent=1)[:4000])}</pre>"


def analyses(run: Path) -> str:
    root = run / "analysis"
    if not root.is_dir():
        return "<p class='muted'>no analyses (run `alignlab analyze ... --out RUN_DIR/analysis/KIND`)</p>"
    parts = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        parts.append(f"<h3>{_esc(sub.name)}</h3>")
        for j in sorted(sub.glob("*.json")):
            try:
                parts.append(_analysis_tables(j.stem, json.loads(j.read_text())))
            except (ValueError, KeyError, TypeError) as exc:
                parts.append(f"<p class='muted'>{_esc(j.name)}: unreadable ({_esc(exc)})</p>")
        parts += [img(p.read_bytes(), f"{sub.name}/{p.name}") for p in sorted(sub.glob("*.png"))]
    return "".join(parts)


def render(run: Path, vs: Path | None = None) -> str:
    runs = [run] + ([vs] if vs else [])
    title = f"alignlab report: {run.name}" + (f" vs {vs.name}" if vs else "")
    sec = [f"<h1>{_esc(title)}</h1>"]
    for r in runs:
        cfg = r / "config.yaml"
        if cfg.exists():
            sec.append(f"<details><summary>config of {_esc(r.name)}</summary><pre>{_esc(cfg.read_text())}</pre></details>")
    sec.append("<h2>Training curves</h2>" + curves(runs))
    for r in runs:
        s, e = samples(r), evals(r)
        if s:
            sec.append(f"<h2>Samples: {_esc(r.name)}</h2>{s}")
        if e:
            sec.append(f"<h2>Evaluation: {_esc(r.name)}</h2>{e}")
        sec.append(f"<h2>Analyses: {_esc(r.name)}</h2>{analyses(r)}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(sec)}</body></html>")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="alignlab report", description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory (config.yaml, metrics.jsonl, samples/, eval/, analysis/)")
    ap.add_argument("--vs", help="a second run directory, overlaid and shown alongside")
    ap.add_argument("--out", help="HTML file (default RUN_DIR/report.html)")
    args = ap.parse_args(argv)
    run = Path(args.run)
    for p, flag in ((run, "RUN_DIR"), (Path(args.vs) if args.vs else None, "--vs")):
        if p is not None and not ((p / "metrics.jsonl").exists() or (p / "config.yaml").exists()
                                  or (p / "analysis").is_dir()):
            print(f"alignlab report: error: {flag} {p} is not a run directory (no metrics.jsonl, config.yaml or "
                  "analysis/)", file=__import__("sys").stderr)
            return 2
    out = Path(args.out) if args.out else run / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(run, Path(args.vs) if args.vs else None))
    print(f"wrote {out}")
    return 0
