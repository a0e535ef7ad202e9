import json
import subprocess
import sys

import pydicom.data

from tests.conftest import ROOT


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "kneeage", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_info_prints_json_per_file_and_fails_on_refusal():
    ok, bad = pydicom.data.get_testdata_file("RG3_J2KR.dcm"), pydicom.data.get_testdata_file("rtplan.dcm")
    p = run_cli("info", ok)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["ok"] and rec["modality"] == "CR" and rec["photometric_interpretation"] == "MONOCHROME1"
    assert "birth_date" not in rec
    p = run_cli("info", ok, bad)
    assert p.returncode == 1
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert [x["ok"] for x in lines] == [True, False]
    assert "rtplan.dcm: " in lines[1]["error"] and "no image pixel data" in lines[1]["error"]
