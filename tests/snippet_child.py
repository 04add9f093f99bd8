"""Run in a child process with one OpenCV version on the path: execute the deployment code the plugin
prints for each input spec as a user would paste it, and compare its blob with ``spec.blob()``.

Usage: python snippet_child.py SPEC [SPEC ...]  ->  JSON on stdout: one result per spec and photo.
Needs no TensorFlow (the photos are scikit-image's PNGs, read with cv2.imread).
"""

from __future__ import annotations

import json
import sys
import traceback


def run(code: str, img):  # noqa: ANN001, ANN201 - the user's namespace: cv2, np and img only
    import cv2
    import numpy as np

    namespace = {"cv2": cv2, "np": np, "img": img}
    exec(compile(code, "<pasted>", "exec"), namespace)  # noqa: S102 - executing what we print is the point
    return namespace["blob"]


def main(texts: list[str]) -> list[dict]:
    import cv2
    import numpy as np

    from pytest_cvdnn.preprocess import load_photos
    from pytest_cvdnn.spec import InputSpec

    photos = [img for _, img in load_photos()][:2]
    photos.append(np.ascontiguousarray(photos[0][37:211, 11:300]))  # an odd-sized crop: resize paths differ
    results = []
    for text in texts:
        spec = InputSpec.parse(text)
        for k, img in enumerate(photos):
            entry = {"spec": text, "photo": k, "opencv": cv2.__version__}
            try:
                expected = spec.blob([img])
                for kind, code in (("cv2", spec.to_cv2_code()), ("numpy", spec.to_numpy_code())):
                    got = run(code, img)
                    entry[kind] = {
                        "code": code,
                        "shape_ok": tuple(got.shape) == tuple(expected.shape),
                        "dtype_ok": got.dtype == expected.dtype,
                        "max_abs": float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
                        if got.shape == expected.shape else None,
                        "scale": float(np.max(np.abs(expected.astype(np.float64)))),
                    }
            except Exception:  # noqa: BLE001 - reported to the test
                entry["error"] = traceback.format_exc()
            results.append(entry)
    return results


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout)
