"""Single-case page path on this CPU: file bytes → decoded radiograph → bone age (+ saliency + report).

What the page does after an upload, without the browser: decode, crop, predict with the fold ensemble
and flip TTA, SDS, then the saliency overlay and the HTML report. Goals (issue #6): under 2 s for the
prediction, under 3 s with SmoothGrad. Prints medians of 5 runs after a warm-up; no assertions.
"""

from timing import med  # also puts the project on sys.path

import io
import time
from datetime import date


from kneeage import case, report
from kneeage.imaging import load_radiograph
from kneeage.phantom import render_knee, write_dicom
from kneeage.predict import Predictor


def dicom_bytes(size):
    ph = render_knee(120, "F", 1, size)
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=date(2015, 1, 1), study=date(2025, 1, 1), patient_id="B1",
                syntax="1.2.840.10008.1.2.4.90")  # JPEG 2000 lossless, as many CR exports are
    return buf.getvalue()


if __name__ == "__main__":
    t0 = time.perf_counter()
    pred = Predictor(device="cpu")
    print(f"model load (5 folds, once per process): {time.perf_counter() - t0:.2f} s")
    for size in (512, 2048):
        data = dicom_bytes(size)

        def predict_only():
            r = load_radiograph(data, name="b.dcm")
            return case.analyse(pred, r, "F", r.chronological_age_months)

        def with_saliency(method):
            def run():
                res, x = predict_only()
                over = case.saliency_overlay(pred, x, "F", method)
                report.case_html(res, x, over, method)
            return run

        print(f"{size}px JPEG 2000 DICOM ({len(data) / 1e6:.1f} MB):")
        print(f"  decode only            {med(lambda: load_radiograph(data, name='b.dcm')) * 1000:7.0f} ms")
        print(f"  upload → result        {med(predict_only) * 1000:7.0f} ms   (goal < 2000)")
        for m in ("gradient", "smoothgrad", "gradcam"):
            print(f"  + {m:<11} + report {med(with_saliency(m)) * 1000:7.0f} ms" + ("   (goal < 3000)" if m == "smoothgrad" else ""))
