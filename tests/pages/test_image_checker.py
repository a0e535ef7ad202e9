"""AppTest of the image checker: a real DICOM and a non-image are uploaded."""

from pathlib import Path

import pydicom.data
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("tiny_model")  # the workflow, not the model: a tiny one (conftest)


def test_upload_dicom_and_non_image():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/image_checker.py").run()
    assert not at.exception
    assert at.title[0].value == "Image checker"
    dcm = Path(pydicom.data.get_testdata_file("RG3_J2KR.dcm"))
    at.file_uploader(key="files").upload("RG3_J2KR.dcm", dcm.read_bytes(), "application/dicom")
    at.file_uploader(key="files").upload("letter.txt", b"this is a letter, not an x-ray", "text/plain")
    at.run()
    assert not at.exception
    assert any("RG3_J2KR.dcm: decoded as DICOM" in s.value for s in at.success)
    assert [e.value for e in at.error] == ["letter.txt: it is not an image file (neither DICOM nor PNG, JPEG or TIFF)."]
    meta = at.json[0].value
    assert '"MONOCHROME1"' in meta and '"CR"' in meta
    assert len(at.get("image")) == 2  # the decoded radiograph and the model input
