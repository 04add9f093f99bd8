"""The HTML deployment report (--cvdnn-html), the pytest-html extras, and the page in a real headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import ROOT, Run, convert, perturb_first_conv

#: a dense-output model (a tiny segmenter: its output is a 48x48 map) that normalises its own input
SEGMENTER = """
import keras
keras.utils.set_random_seed(11)
inp = keras.Input((48, 48, 3))
x = keras.layers.Rescaling(1 / 255.0, name="scale")(inp)
x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(x)
x = keras.layers.Conv2D(3, 1, name="classes")(x)
keras.Model(inp, x, name="segmenter").save({path!r})
"""


def _browser() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if (found := shutil.which(name))), None)


@pytest.fixture(scope="session")
def failing_report(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict[str, Any]:
    """One failing deployment, run once: a shipped ONNX whose first convolution drifted (parity fails, on a
    dense output) and a blob spec with the wrong scale and mean (preprocessing fails); --cvdnn-html and
    --cvdnn-report written."""
    folder = tmp_path_factory.mktemp("html")
    model = folder / "segmenter.keras"
    subprocess.run([sys.executable, "-c", SEGMENTER.format(path=str(model))], check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    import keras

    good = convert(keras.saving.load_model(model), folder / "good.onnx", size=48)
    node = perturb_first_conv(good, folder / "shipped.onnx", scale=0.5)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
                          "--cvdnn-model=segmenter.keras", "--cvdnn-onnx=shipped.onnx", "--cvdnn-preprocess=tf",
                          f"--cvdnn-cache-dir={shared_cache}", "--cvdnn-html=report.html",
                          "--cvdnn-report=report.json", "--html=pytest-html.html", "--self-contained-html"],
                         cwd=folder, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    return {"folder": folder, "html": (folder / "report.html").read_text(), "node": node,
            "json": json.loads((folder / "report.json").read_text()), "stdout": run.stdout}


def _section(page: str, item: str) -> str:
    start = page.index(f'<section id="item-{re.sub(r"[^0-9A-Za-z]", "-", item)}"')
    return page[start:page.index("</section>", start)]


def test_html_report_draws_a_failing_deployment(failing_report: dict[str, Any]) -> None:
    """Issue 17: the item matrix in colour; per parity pair the error where it sits (a heatmap over the output
    map) and a |Δ| histogram against the tolerance; the first divergent node with its neighbours; for
    preprocessing the declared blob, the Keras reference and their difference per photo with the mistake
    named; the code to ship with a copy button.  One file: nothing is fetched."""
    page = failing_report["html"]
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained
    assert re.search(r'<td class="failed" title="[^"]*"><a href="#item-preprocessing">failed</a>', page)
    assert re.search(r'<td class="passed" title="[^"]*"><a href="#item-load">passed</a>', page)
    parity = _section(page, "parity[keras-onnxruntime]")
    assert "failed" in parity and "data:image/png;base64," in parity and "|Δ| of sample 0" in parity
    assert parity.count("<svg") == 1 and "atol 0.0001" in parity  # the histogram, with the tolerance drawn
    assert f'<span class="node hit">{failing_report["node"]} <i>Conv</i></span>' in parity  # first divergent
    assert '<span class="node">' in parity  # and its neighbours
    preprocessing = _section(page, "preprocessing")
    assert preprocessing.count("<h4>photo ") == 3
    assert "wrong mean" in preprocessing and ">declared blob<" in preprocessing
    assert ">Keras reference<" in preprocessing and "|difference|, max 254" in preprocessing
    assert "navigator.clipboard.writeText" in preprocessing and "scalefactor=1.0, size=(48, 48)" in preprocessing
    assert "Deploy:</b>" not in page  # (the verified-code box is for a deployment whose preprocessing passed)
    # each image is a real PNG of the drawn size
    import cv2

    for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", preprocessing)[:3]:
        import base64

        image = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
        assert image is not None and min(image.shape[:2]) >= 96
    heat = cv2.imdecode(np.frombuffer(__import__("base64").b64decode(
        re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", parity).group(1)), np.uint8), cv2.IMREAD_COLOR)
    assert heat.shape[:2] == (192, 192) and heat.std() > 5  # the error map is not flat: it shows where
    # the same evidence is in the JSON report
    checks = failing_report["json"]["models"][0]["checks"]
    kinds = [f["kind"] for f in checks["parity[keras-onnxruntime]"]["data"]["figures"]]
    assert kinds == ["heatmap", "histogram", "graph"]
    assert (failing_report["folder"] / "report.html").stat().st_mode & 0o777 == 0o644  # (mkstemp made it 0600)


def test_pytest_html_rows_carry_the_pictures_and_the_diagnosis(failing_report: dict[str, Any]) -> None:
    """Issue 17: with pytest-html installed, each check's row in its report has the item's figures and
    verdict as extras (its documented ``extras`` hook), so a project's existing report shows them."""
    page = (failing_report["folder"] / "pytest-html.html").read_text()
    blob = re.search(r'data-jsonblob="([^"]*)"', page)
    assert blob is not None
    import html

    data = json.loads(html.unescape(blob.group(1)))
    rows = {t["testId"] if "testId" in t else key: t for key, tests in data["tests"].items() for t in tests}
    preprocessing = next(t for key, t in rows.items() if key.endswith("::preprocessing"))
    extras = preprocessing["extras"]
    assert extras and extras[0]["format_type"] == "html"
    assert "wrong mean" in extras[0]["content"] and "data:image/png;base64," in extras[0]["content"]
    parity = next(t for key, t in rows.items() if key.endswith("::parity[keras-onnxruntime]"))
    assert [e["format_type"] for e in parity["extras"]] == ["html", "image"]  # (the heatmap as a thumbnail)


def test_figures_of_a_vector_output_are_bars_of_the_classes_that_matter() -> None:
    """Vectors are drawn as per-class bars (the top-k of each side, marked); dense outputs as a heatmap; the
    histogram counts every value once and takes the tolerance onto its axis."""
    from pytest_cvdnn.figures import parity_figures
    from pytest_cvdnn.html_report import figure_html

    ref = np.zeros((2, 10), np.float32)
    ref[:, 3], ref[:, 7] = 0.9, 0.05
    obt = ref.copy()
    obt[0, 5] = 0.95  # another class wins in the obtained output
    bars, hist = parity_figures([ref], [obt], ["probs"], 1e-4, "keras", "cv2dnn")
    assert bars["kind"] == "bars" and bars["classes"][:2] == [3, 7] and 5 in bars["classes"]
    assert bars["top_reference"][0] == 3 and bars["top_obtained"][0] == 5
    assert hist["zeros"] + sum(hist["counts"]) == hist["total"] == ref.size
    assert hist["edges"][0] <= -4 <= hist["edges"][-1]
    svg = figure_html(bars)
    assert svg.count("<rect") == 2 * len(bars["classes"]) and "★" in svg and "◆" in svg
    maps = parity_figures([np.zeros((1, 4, 8, 8), np.float32)], [np.ones((1, 4, 8, 8), np.float32)], ["seg"], 1e-4,
                          "keras", "cv2dnn")
    assert maps[0]["kind"] == "heatmap" and maps[0]["max"] == 1.0


def test_html_report_lists_the_remedies_tried_with_the_verified_fix(run_cvdnn: Callable[..., Run],
                                                                     pytester: pytest.Pytester,
                                                                     opencv_4_5_5: Path) -> None:
    """A load that fails on OpenCV 4.5.5: the page has the remedy table (the rewrite that works) and how to make
    the fixed file; no TensorFlow is needed for an ONNX model's report."""
    import onnx

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_mutants import importer_limits_model

    onnx.save(importer_limits_model("squeeze"), str(pytester.path / "squeeze.onnx"))
    run = run_cvdnn("--cvdnn-model=squeeze.onnx", "--cvdnn-target=opencv==4.5.5", "--cvdnn-html=r.html",
                    "-k", "load", cache=pytester.path / "cache")
    assert run.ret == 1, run.text
    page = (pytester.path / "r.html").read_text()
    load = _section(page, "load[opencv-4.5.5]")
    assert "<th>ONNX rewrite</th>" in load
    assert re.search(r"<td>squeeze-as-reshape</td><td class=\"passed\">works</td>", load)
    assert "fix.py model.onnx" in load and "navigator.clipboard" in load


@pytest.mark.browser
def test_the_report_renders_in_a_headless_browser(failing_report: dict[str, Any], tmp_path: Path) -> None:
    """Issue 17: the page, rendered by a real browser (Debian's chromium, headless), is a picture with the
    report's colours in it, not a blank page.  CVDNN_UPDATE_SCREENSHOT=1 copies it to docs/report.png (the
    README's screenshot)."""
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium/chrome installed (Debian: apt-get install chromium)")
    shot = tmp_path / "report.png"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1100,2300", f"--screenshot={shot}",
                           (failing_report["folder"] / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2300, 1100)
    assert image.std() > 20  # not blank
    colours = {tuple(int(v) // 32 for v in px) for px in image[::7, ::7].reshape(-1, 3)}
    assert len(colours) > 30  # text, badges, pictures: many colours
    red = (image[..., 2] > 180) & (image[..., 1] < 80) & (image[..., 0] < 80)
    assert red.sum() > 50  # the failed badges and cells
    if os.environ.get("CVDNN_UPDATE_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "report.png")


def test_figures_of_huge_or_broken_outputs_stay_small_and_valid() -> None:
    """A 2000x1500 segmentation map is drawn at most 512 px a side, keeping the one wrong pixel (block maxima);
    NaN/inf in a vector are drawn as empty bars and written as JSON null, not as invalid JSON."""
    import base64
    import html as html_lib

    import cv2

    from pytest_cvdnn.figures import parity_figures
    from pytest_cvdnn.html_report import figure_html

    ref = np.zeros((1, 2000, 1500, 2), np.float32)
    obt = ref.copy()
    obt[0, 1234, 777, 1] = 5.0
    heat = parity_figures([ref], [obt], ["mask"], 1e-4, "keras", "cv2dnn")[0]
    image = cv2.imdecode(np.frombuffer(base64.b64decode(heat["png"]), np.uint8), cv2.IMREAD_COLOR)
    assert max(image.shape[:2]) <= 512 and image.max() > 200 and heat["max"] == 5.0
    vec = np.array([[0.1, np.nan, 0.7, np.inf]], np.float32)
    bars = parity_figures([vec], [np.zeros_like(vec)], ["probs"], 1e-4, "keras", "cv2dnn")[0]
    text = json.dumps(bars, allow_nan=False)  # (raises on NaN)
    assert "null" in text
    assert "not finite" in html_lib.unescape(figure_html(bars))


def test_only_code_checked_against_keras_gets_a_copy_button_and_failures_keep_their_own_cause(
        failing_report: dict[str, Any]) -> None:
    """The passing input_spec's blob code (the wrong scale and mean) is shown without a copy button, with why,
    while preprocessing failed; the failures are listed by stage, each with its own first line, and the node the
    diagnosis names stands beside its own stage only; passing items are collapsed."""
    page = failing_report["html"]
    spec = _section(page, "input_spec")
    assert "navigator.clipboard" not in spec and "the preprocessing check failed: do not ship it" in spec
    assert spec.count("<details>") == 1 and "<summary>input_spec" in spec  # (collapsed)
    failures = page[page.index("<h3>Failures, by stage</h3>"):]
    failures = failures[:failures.index("</ul>")]
    items = re.findall(r'<li><a href="#item-([^"]+)">([^<]+)</a>: (.*?)</li>', failures)
    assert [name for _, name, _ in items][0] == "preprocessing" and len(items) >= 3, items
    assert items[0][2].startswith("the mean is") and "node" not in items[0][2]
    checks = failing_report["json"]["models"][0]["checks"]
    assert all(checks[name]["outcome"] == "failed" for _, name, _ in items)
    node = failing_report["node"]
    assert all(node in text for _, name, text in items if name.startswith("parity[keras")), items
    diagnosis = failing_report["json"]["models"][0]["diagnosis"]  # (the JSON's too: the stage's own story)
    assert diagnosis["failing_stage"] == "preprocessing" and diagnosis["node"] is None, diagnosis


def test_an_all_pass_page_is_collapsed_to_its_matrices_and_the_verified_code() -> None:
    """Two models whose every item passed: each item's evidence is inside a closed <details>; what is open is the
    title, each model's matrix and the verified blob code (checked against Keras: with a copy button)."""
    from pytest_cvdnn.html_report import render

    figure = {"kind": "histogram", "title": "|Δ|", "values": [0.0, 1e-6], "tolerance": 1e-4}
    checks = {name: {"outcome": "passed", "message": f"{name} ok", "seconds": 0.1,
                     "data": {"figures": [figure]} if name.startswith("parity") else {}}
              for name in ("convert", "ops", "load", "input_spec", "preprocessing", "output_spec",
                           "parity[keras-onnxruntime]", "parity[onnxruntime-cv2dnn]", "parity[keras-cv2dnn]", "batch",
                           "determinism")}
    checks["input_spec"]["data"] = {"code": "blob = cv2.dnn.blobFromImage(img, 1.0, (64, 64))"}
    page = render({"models": [{"model": m, "checks": checks, "environment": {}} for m in ("a.keras", "b.keras")]})
    assert page.count("<details>") == 22 and "<details open" not in page
    open_part = re.sub(r"<details>.*?</details>", "", page, flags=re.S)
    assert open_part.count("navigator.clipboard") == 2  # (one verified Deploy box per model)
    assert "Failures, by stage" not in page and "<svg" not in open_part
    assert len(re.sub(r"<[^>]+>", "", open_part.split("</style>")[1])) < 4000  # (text a reader sees unopened)
