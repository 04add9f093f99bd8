"""One self-contained HTML page per session: the item matrix per model and target, the evidence drawn the way the
output is shaped (figures.py), the remedies tried, and the code to ship with a copy button.

Built on the controller from the same records as the JSON report (report.Results.as_json); images are inline
(base64 PNG), charts are inline SVG, no script or style is fetched from anywhere.  :func:`item_fragment` is one
item's part of the page, which the pytest-html extras reuse.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Any, Sequence

from .report import _STAGE_ORDER  # (failures are shown in the order the stages run, as in the JSON diagnosis)

__all__ = ["write_html", "render", "item_fragment", "figure_html"]

_COLOURS = {"passed": "#1a7f37", "failed": "#cf222e", "skipped": "#9a6700", "error": "#8250df"}

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px} .muted{color:#656d76} .env{font-size:12px}
table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;
vertical-align:top} th{background:#f6f8fa}
td.passed{background:#dafbe1} td.failed{background:#ffebe9;font-weight:600} td.skipped{background:#fff8c5}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.msg{white-space:pre-wrap;background:#f6f8fa;border:1px solid #d0d7de;padding:8px;border-radius:6px;font-size:13px}
.fix{border-left:4px solid #cf222e;padding:4px 10px;margin:6px 0;background:#fff5f5}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start;margin:8px 0}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:8px;background:#fff}
figcaption{font-size:12px;color:#656d76;max-width:460px} figure img{image-rendering:pixelated;display:block}
.code{position:relative} .code pre{background:#0d1117;color:#e6edf3;padding:10px 12px;border-radius:6px;
overflow-x:auto;font-size:13px} .code button{position:absolute;top:6px;right:6px;font-size:12px}
.node{display:inline-block;border:1px solid #8c959f;border-radius:4px;padding:2px 6px;margin:2px;font-size:12px}
.node.hit{border-color:#cf222e;background:#ffebe9;font-weight:600}
details>summary{cursor:pointer;font-weight:600;margin:6px 0} section.passed{border-top:1px solid #eaeef2}
"""

_COPY = ("<button type=\"button\" onclick=\"navigator.clipboard.writeText(this.nextElementSibling.innerText);"
         "this.textContent='copied'\">copy</button>")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _badge(outcome: str) -> str:
    return f'<span class="badge" style="background:{_COLOURS.get(outcome, "#57606a")}">{_e(outcome)}</span>'


def _code(text: str) -> str:
    return f'<div class="code">{_COPY}<pre>{_e(text)}</pre></div>'


def _split(name: str) -> tuple[str, str]:
    """A check's item name → (check, column): ``parity[onnxruntime-cv2dnn@opencv-4.5.5]`` →
    (``parity[onnxruntime-cv2dnn]``, ``opencv-4.5.5``); ``tflite:load`` → (``load``, ``tflite``)."""
    fmt, _, base = name.rpartition(":")
    column = fmt or "local"
    if base.startswith("parity[") and "@" in base:
        pair, _, where = base[len("parity["):-1].partition("@")
        return f"parity[{pair}]", f"{fmt + ' ' if fmt else ''}{where}"
    if base.endswith("]") and "[" in base and not base.startswith("parity["):
        check, _, where = base[:-1].partition("[")
        return check, f"{fmt + ' ' if fmt else ''}{where}"
    return base, column


# -- charts (inline SVG) -----------------------------------------------------------------------------------
def _histogram_svg(fig: dict[str, Any]) -> str:
    edges, counts = fig.get("edges") or [], fig.get("counts") or []
    width, height, pad = 440, 170, 30
    if not counts:
        return f'<p class="muted">every value equal ({fig.get("zeros", 0)} of {fig.get("total", 0)})</p>'
    low: float = edges[0]
    high: float = edges[-1]
    top = max(counts) or 1
    span = max(high - low, 1e-9)

    def x(v: float) -> float:
        return pad + (v - low) / span * (width - 2 * pad)

    bars = []
    for k, count in enumerate(counts):
        h = (height - 2 * pad) * (math.log1p(count) / math.log1p(top))
        bars.append(f'<rect x="{x(edges[k]):.1f}" y="{height - pad - h:.1f}" width="{max(x(edges[k + 1]) - x(edges[k]) - 1, 1):.1f}" '
                    f'height="{h:.1f}" fill="#0969da"><title>{count} value(s) in [1e{edges[k]:.2f}, 1e{edges[k + 1]:.2f})'
                    f"</title></rect>")
    ticks = "".join(f'<text x="{x(d):.1f}" y="{height - 10}" font-size="10" text-anchor="middle">1e{int(d)}</text>'
                    for d in range(math.ceil(low), math.floor(high) + 1))
    atol = fig.get("atol") or 0.0
    line = ""
    if atol > 0:
        at = math.log10(atol)
        where = x(min(max(at, low), high))
        anchor = "end" if where > width / 2 else "start"
        line = (f'<line x1="{where:.1f}" x2="{where:.1f}" y1="{pad - 10}" y2="{height - pad}" stroke="#cf222e" '
                f'stroke-dasharray="4 3" stroke-width="2"/><text x="{where + (-4 if anchor == "end" else 4):.1f}" '
                f'y="{pad - 12}" font-size="11" text-anchor="{anchor}" fill="#cf222e">atol {atol:g}'
                + (" (off scale)" if not low <= at <= high else "") + "</text>")
    axis = f'<line x1="{pad}" x2="{width - pad}" y1="{height - pad}" y2="{height - pad}" stroke="#57606a"/>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
            + "".join(bars) + axis + ticks + line + "</svg>")


def _bars_svg(fig: dict[str, Any]) -> str:
    classes, ref, obt = fig.get("classes") or [], fig.get("reference") or [], fig.get("obtained") or []
    width, row = 440, 22
    height = row * len(classes) + 30
    scale = max([abs(v) for v in ref + obt if v is not None] + [1e-30])
    left, room = 90, 440 - 90 - 20
    parts = []
    for k, (c, a, b) in enumerate(zip(classes, ref, obt, strict=True)):
        y = 24 + k * row
        marks = ("★" if c in fig.get("top_reference", [])[:1] else "") + ("◆" if c in fig.get("top_obtained", [])[:1]
                                                                          else "")
        parts.append(f'<text x="4" y="{y + 12}" font-size="11">class {c} {marks}</text>')
        for j, (v, colour) in enumerate(((a, "#0969da"), (b, "#fb8500"))):
            w = room * abs(v) / scale if v is not None else 0.0
            parts.append(f'<rect x="{left}" y="{y + j * 9}" width="{max(w, 0.5):.1f}" height="8" fill="{colour}">'
                         f"<title>{'not finite' if v is None else format(v, '.6g')}</title></rect>")
    legend = (f'<text x="{left}" y="12" font-size="11" fill="#0969da">■ {_e(fig.get("expected_name", "reference"))}'
              f'</text><text x="{left + 140}" y="12" font-size="11" fill="#fb8500">■ '
              f'{_e(fig.get("obtained_name", "obtained"))}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">{legend}'
            + "".join(parts) + "</svg>")


def figure_html(fig: dict[str, Any]) -> str:
    """One figure record (figures.py) as an HTML ``<figure>``."""
    kind, title = fig.get("kind"), _e(fig.get("title", ""))
    if kind == "heatmap":
        return (f'<figure><img alt="{title}" src="data:image/png;base64,{fig["png"]}"><figcaption>{title}; black 0 '
                f'… yellow {fig.get("max", 0):.3g}; output shape {tuple(fig.get("shape", []))}</figcaption></figure>')
    if kind == "bars":
        return (f"<figure>{_bars_svg(fig)}<figcaption>{title}: the top {len(fig.get('top_reference', []))} classes "
                "of each side (★ top-1 of the reference, ◆ top-1 obtained)</figcaption></figure>")
    if kind == "histogram":
        zeros = fig.get("zeros", 0)
        return (f"<figure>{_histogram_svg(fig)}<figcaption>{title} (log scale of counts; {zeros} of "
                f"{fig.get('total', 0)} exactly equal); the dashed line is the tolerance</figcaption></figure>")
    if kind == "images":
        cells = "".join(f'<figure><img alt="{_e(i["label"])}" src="data:image/png;base64,{i["png"]}">'
                        f'<figcaption>{_e(i["label"])}</figcaption></figure>' for i in fig.get("items", []))
        mistakes = "; ".join(fig.get("mistakes") or [])
        return (f'<div><h4>{title}' + (f': <span style="color:#cf222e">{_e(mistakes)}</span>' if mistakes else "")
                + f'</h4><div class="figs">{cells}</div><p class="muted">shown on one scale, '
                f'{fig.get("range", [0, 0])[0]:.3g} … {fig.get("range", [0, 0])[1]:.3g}</p></div>')
    if kind == "graph":
        def nodes(items: Sequence[Sequence[str]]) -> str:
            return "".join(f'<span class="node">{_e(n)} <i>{_e(op)}</i></span>' for n, op in items) or "—"

        return (f"<figure><div>{nodes(fig.get('inputs', []))}</div><div>→ <span class=\"node hit\">{_e(fig['node'])} "
                f"<i>{_e(fig['op_type'])}</i></span> →</div><div>{nodes(fig.get('outputs', []))}</div>"
                "<figcaption>the node named by the diagnosis, with the nodes that feed it and read it</figcaption>"
                "</figure>")
    return ""


# -- sections ---------------------------------------------------------------------------------------------
def _remedy_tables(data: dict[str, Any]) -> str:
    out = []
    onnx_rows = data.get("onnx_remedies") or []
    if onnx_rows:
        out.append("<table><tr><th>ONNX rewrite</th><th>outcome</th><th>detail</th></tr>" + "".join(
            f"<tr><td>{_e(r.get('candidate'))}</td><td class=\"{'passed' if r.get('outcome') == 'works' else 'failed'}\">"
            f"{_e(r.get('outcome'))}</td><td>{_e(r.get('detail', ''))}</td></tr>" for r in onnx_rows) + "</table>")
    rows = data.get("remedies") or []
    if rows:
        out.append("<table><tr><th>opset</th><th>layout</th><th>outcome</th><th>detail</th></tr>" + "".join(
            f"<tr><td>{_e(r.get('opset'))}</td><td>{_e(str(r.get('layout', '')).upper())}</td>"
            f"<td class=\"{'passed' if r.get('outcome') == 'works' else 'failed'}\">{_e(r.get('outcome'))}</td>"
            f"<td>{_e(r.get('detail', ''))}</td></tr>" for r in rows) + "</table>")
    if data.get("fixed_onnx"):
        folder = Path(str(data["fixed_onnx"])).parent
        out.append(f"<p>verified fixed graph: <code>{_e(data['fixed_onnx'])}</code>, made by</p>"
                   + _code(f"python {folder / 'fix.py'} model.onnx"))
    return "".join(out)


#: what the blob code of a passing input_spec item is, by the preprocessing item's outcome: only code checked
#: against Keras gets a copy button
_SHIP = {"passed": None,
         "failed": "this blob fits the net, but the preprocessing check failed: do not ship it; ship the corrected "
                   "code of the preprocessing item",
         "skipped": "this blob fits the net; its values were not checked against Keras (no reference for this "
                    "model's preprocessing), so check them in your application"}


def item_fragment(name: str, check: dict[str, Any], preprocessing: str | None = None) -> str:
    """One item: outcome, verdict and Fix, the figures, the remedies, the code it verified or proposes.
    ``preprocessing``: that item's outcome for the same model (None: not known yet), which decides whether the
    blob code of a passing input_spec is offered to copy."""
    message = str(check.get("message", ""))
    verdict, _, fix = message.partition(" Fix: ")
    data = check.get("data") or {}
    parts = [f'<div class="msg">{_e(verdict)}</div>']
    if fix:
        parts.append(f'<div class="fix"><b>Fix:</b> {_e(fix)}</div>')
    figures = data.get("figures") or []
    rows = [figure_html(f) for f in figures if f.get("kind") != "images"]
    if rows:
        parts.append(f'<div class="figs">{"".join(rows)}</div>')
    photos = [figure_html(f) for f in figures if f.get("kind") == "images"]
    if photos:
        parts.append(f'<div class="figs">{"".join(photos)}</div>')
    parts.append(_remedy_tables(data))
    if data.get("stages"):
        table = "".join(f"<tr><td>{_e(r['stage'])}</td><td>{_e(r['deployed'])}</td><td>{_e(r['training'])}</td>"
                        f"<td>{r['rate'] * 100:.4g} %</td></tr>" for r in data["stages"])
        parts.append("<p>agreement with one stage of the deployed pipeline replaced by the training side's:</p>"
                     "<table><tr><th>stage</th><th>deployed</th><th>training side</th><th>agreement</th></tr>"
                     f"{table}</table>")
    if data.get("corrected_code") and check.get("outcome") == "failed":
        parts.append("<p>the corrected deployment code (verified against Keras):</p>" + _code(str(data["corrected_code"])))
    if data.get("code") and check.get("outcome") == "passed":
        caution = _SHIP.get(preprocessing or "", "this blob fits the net; whether its values are right is the "
                            "preprocessing item's verdict")
        if caution is None:
            parts.append("<p>the deployment code this check verified:</p>" + _code(str(data["code"])))
        else:
            parts.append(f'<p class="muted">{_e(caution)}:</p><pre>{_e(data["code"])}</pre>')
    return _heading(name, check) + "".join(parts)


def _heading(name: str, check: dict[str, Any]) -> str:
    return (f"<h3>{_e(name)} {_badge(check.get('outcome', '?'))} <span class=\"muted\">"
            f"{check.get('seconds', 0):.2f} s</span></h3>")


def _matrix(checks: dict[str, Any]) -> str:
    cells: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
    columns: list[str] = []
    for name, check in checks.items():
        row, column = _split(name)
        if column not in columns:
            columns.append(column)
        cells.setdefault(row, {})[column] = (name, check)
    head = "<tr><th>check</th>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"
    body = []
    for row in cells:
        tds = []
        for column in columns:
            found = cells[row].get(column)
            if found is None:
                tds.append("<td></td>")
                continue
            name, check = found
            first = str(check.get("message", "")).split(". Fix:")[0][:300]
            tds.append(f'<td class="{_e(check.get("outcome"))}" title="{_e(first)}"><a href="#{_anchor(name)}">'
                       f"{_e(check.get('outcome'))}</a></td>")
        body.append(f"<tr><th>{_e(row)}</th>{''.join(tds)}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _anchor(name: str) -> str:
    return "item-" + "".join(c if c.isalnum() else "-" for c in name)


def _model_section(model: dict[str, Any]) -> str:
    checks = model.get("checks") or {}
    counts: dict[str, int] = {}
    for c in checks.values():
        counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    env = model.get("environment") or {}
    parts = [f"<h2>{_e(model['model'])}</h2><p>" + " ".join(f"{_badge(k)} {n}" for k, n in sorted(counts.items()))
             + f' <span class="muted env">OpenCV {_e(env.get("opencv", "?"))}, opset {_e(env.get("opset", "?"))}, '
             f'{_e(str(env.get("layout", "?")).upper())}</span></p>', _matrix(checks)]
    preprocessing = (checks.get("preprocessing") or {}).get("outcome")
    spec = checks.get("input_spec") or {}
    if spec.get("outcome") == "passed" and preprocessing == "passed":
        data = spec.get("data") or {}
        code = "\n".join(str(e.get("code")) for e in data.get("inputs", [data]) if e.get("code"))
        if code:
            parts.append("<p><b>Deploy:</b> the blob code the gate verified against Keras</p>" + _code(code))

    def rank(name: str) -> tuple[bool, int, str]:  # failures first, in the order the stages run
        base = _split(name)[0].split("[")[0]
        return (checks[name]["outcome"] != "failed",
                _STAGE_ORDER.index(base) if base in _STAGE_ORDER else len(_STAGE_ORDER), name)

    order = sorted(checks, key=rank)
    parts.append(_failures(order, checks, model.get("diagnosis") or {}))
    for name in order:
        check = checks[name]
        if check["outcome"] == "skipped":
            continue
        fragment = item_fragment(name, check, preprocessing)
        if check["outcome"] == "passed":  # (collapsed: the failures are what a reader came for)
            head, _, body = fragment.partition("</h3>")
            fragment = f"<details><summary>{head.removeprefix('<h3>')}</summary>{body}</details>"
        parts.append(f'<section id="{_anchor(name)}" class="{_e(check["outcome"])}">{fragment}</section>')
    return "".join(parts)


def _failures(order: list[str], checks: dict[str, Any], diagnosis: dict[str, Any]) -> str:
    """The failures in the order the stages run, each with its own first line and the node its own evidence names
    (never another failure's)."""
    from .errors import headline

    items = []
    for name in order:
        if checks[name]["outcome"] != "failed":
            continue
        data = checks[name].get("data") or {}
        known = data if data.get("node") else (data.get("first_divergent") or {})
        if name == diagnosis.get("failing_stage") and not known.get("node"):
            known = diagnosis  # (a failed load: the node is the op scan's or the remedies')
        where = ""
        if known.get("node"):
            where = (f' <span class="muted">node <code>{_e(known["node"])}</code>'
                     + (f" ({_e(known['op_type'])})" if known.get("op_type") else "")
                     + (f", Keras layer <code>{_e(known['keras_layer'])}</code>" if known.get("keras_layer")
                        else "") + "</span>")
        first = headline(str(checks[name].get("message", "")).split(" Fix: ")[0], 200)
        items.append(f'<li><a href="#{_anchor(name)}">{_e(name)}</a>: {_e(first)}{where}</li>')
    return f"<h3>Failures, by stage</h3><ul>{''.join(items)}</ul>" if items else ""


def render(report: dict[str, Any]) -> str:
    """The page for a JSON report (report.Results.as_json)."""
    models = report.get("models") or []
    env = (models[0].get("environment") or {}) if models else {}
    names = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "opencv", "numpy")
    tools = ", ".join(f"{k} {env[k]}" for k in names if env.get(k) and env[k] != "not installed")
    failed = sum(1 for m in models for c in (m.get("checks") or {}).values() if c["outcome"] == "failed")
    title = f"pytest-cvdnn: {len(models)} model(s), {failed} failed item(s)"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="generator" content="pytest-cvdnn"><title>' + _e(title) + "</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>"
            f'<p class="muted env">{_e(time.strftime("%Y-%m-%d %H:%M:%S"))}{"; " + _e(tools) if tools else ""}</p>'
            + "".join(_model_section(m) for m in models) + "</body></html>")


def write_html(path: Path, report: dict[str, Any], protected: Any = None) -> None:
    """Write the page (atomically, readable by others, never over a file the plugin did not write:
    report.publish)."""
    from .report import publish

    publish(Path(path), render(report), "--cvdnn-html", protected)
