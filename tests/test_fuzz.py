"""Fuzzing hostile input: mutated real DICOMs (pydicom's and pydicom-data's test files and our phantoms),
PNG/JPEG, CSV manifests and zip archives. Every input ends in a result or a KneeageError — never another
exception or a hang. CI runs a bounded number of examples; a longer run:

    KNEEAGE_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py
"""

import io
import os
import signal
import struct
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from PIL import Image

from kneeage.cohort import FolderSource, ZipSource, check_cohort, read_manifest
from kneeage.errors import KneeageError
from kneeage.imaging import Radiograph, load_radiograph
from kneeage.report import safe_csv

EXAMPLES = int(os.environ.get("KNEEAGE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SEED_NAMES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "emri_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "SC_rgb.dcm", "rtplan.dcm", "JPEG-lossy.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"]


def _seeds():
    out = {}
    for n in SEED_NAMES:
        try:
            out[n] = Path(pydicom.data.get_testdata_file(n)).read_bytes()
        except (TypeError, ValueError, OSError):
            continue
    from datetime import date

    from kneeage.phantom import render_knee, write_dicom

    ph = render_knee(100, "F", 1, 96)
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=date(2015, 1, 1), study=date(2024, 1, 1), patient_id="F1")
    out["phantom.dcm"] = buf.getvalue()
    for fmt in ("PNG", "JPEG", "TIFF"):
        b = io.BytesIO()
        Image.fromarray((ph.pixels * 255).astype(np.uint8)).save(b, format=fmt)
        out[f"phantom.{fmt.lower()}"] = b.getvalue()
    return out


SEEDS = _seeds()


@contextmanager
def time_limit(seconds=20):
    def boom(*_):
        raise TimeoutError("input took too long: a hang")

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _must_end_well(fn):
    with time_limit():
        try:
            return fn()
        except KneeageError as e:
            assert str(e).strip(), "a refusal must say why"
            return e


@hs.composite
def mutated(draw, names=tuple(SEEDS)):
    """A real file with random damage: byte flips, truncation, insertion or a copied block."""
    data = bytearray(SEEDS[draw(hs.sampled_from(names))])
    for _ in range(draw(hs.integers(1, 4))):
        kind = draw(hs.sampled_from(["flip", "truncate", "insert", "copy", "zero"]))
        pos = draw(hs.integers(0, max(0, len(data) - 1)))
        if kind == "flip":
            for k in range(draw(hs.integers(1, 16))):
                i = (pos + k * 7919) % len(data)
                data[i] = draw(hs.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(hs.binary(min_size=1, max_size=64))
        elif kind == "copy":
            n = draw(hs.integers(1, 256))
            data[pos:pos] = data[max(0, pos - n):pos]
        else:
            data[pos:pos + draw(hs.integers(1, 512))] = b"\0" * 8
        if not data:
            break
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_files_end_in_an_image_or_a_refusal(data):
    out = _must_end_well(lambda: load_radiograph(data, name="fuzz.dcm"))
    if isinstance(out, Radiograph):
        assert out.pixels.ndim == 2 and np.isfinite(out.pixels).all()


SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5", "1.2.3.4.5.6", ""]


def _with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """The same file, byte for byte, except the file meta's TransferSyntaxUID (and its group length):
    a file that lies about how its data set is encoded, as pydicom itself will not write one."""
    at = data.index(b"\x02\x00\x10\x00UI", 132)
    old = struct.unpack_from("<H", data, at + 6)[0]
    value = uid.encode() + b"\0" * (len(uid) % 2)
    out = bytearray(data[:at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + old:])
    group = out.index(b"\x02\x00\x00\x00UL", 132)
    struct.pack_into("<I", out, group + 8, struct.unpack_from("<I", out, group + 8)[0] + len(value) - old)
    return bytes(out)


def _transfer_syntax(data: bytes) -> str:
    at = data.index(b"\x02\x00\x10\x00UI", 132)
    return data[at + 8:at + 8 + struct.unpack_from("<H", data, at + 6)[0]].rstrip(b"\0 ").decode()


@pytest.mark.parametrize("seed", ["CT_small.dcm", "JPEG2000.dcm", "phantom.dcm", "emri_small_RLE.dcm"])
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_lying_transfer_syntax(seed, syntax):
    data = _with_transfer_syntax(SEEDS[seed], syntax)
    assert _transfer_syntax(data) == syntax
    truthful = syntax == _transfer_syntax(SEEDS[seed])
    out = _must_end_well(lambda: load_radiograph(data, name="lie.dcm"))
    if isinstance(out, Radiograph):  # decoded anyway: a valid image, bone bright in [0, 1]
        assert out.pixels.ndim == 2 and np.isfinite(out.pixels).all() and 0 <= out.pixels.min() <= out.pixels.max() <= 1
    else:  # refused: one sentence that names the file
        assert str(out).startswith("lie.dcm: ") and str(out).endswith(".")
    if truthful:  # rewriting the same UID changes nothing
        same = load_radiograph(SEEDS[seed], name="lie.dcm") if seed != "emri_small_RLE.dcm" else None
        assert str(out) == "lie.dcm: it is a multi-frame object (10 frames); export a single image." if same is None \
            else np.array_equal(out.pixels, same.pixels)


@pytest.mark.parametrize("rows,cols", [(65535, 65535), (0, 0), (2, 65535), (40000, 40000)])
def test_huge_or_empty_dimensions_are_refused_before_decoding(rows, cols):
    ds = pydicom.dcmread(io.BytesIO(SEEDS["phantom.dcm"]))
    ds.Rows, ds.Columns = rows, cols
    buf = io.BytesIO()
    ds.save_as(buf)
    with time_limit(5):
        with pytest.raises(KneeageError):
            load_radiograph(buf.getvalue(), name="huge.dcm")


@pytest.mark.parametrize("tag,vr,value", [(0x00280010, "OB", b"\xff\xff"), (0x00280100, "US", 7),
                                          (0x00280004, "CS", "PALETTE COLOR"), (0x00280002, "US", 3),
                                          (0x7FE00010, "OW", b"\x00")])
def test_bad_values_and_vrs(tag, vr, value):
    ds = pydicom.dcmread(io.BytesIO(SEEDS["phantom.dcm"]))
    ds.add_new(tag, vr, value)
    buf = io.BytesIO()
    try:
        ds.save_as(buf)
    except Exception:  # noqa: BLE001
        pytest.skip("pydicom will not write this value")
    _must_end_well(lambda: load_radiograph(buf.getvalue(), name="bad.dcm"))


CELL = hs.one_of(hs.text(max_size=30), hs.sampled_from(["=cmd|' /C calc'!A0", "+1+1", "-2", "@SUM(A1)", "\ufeffid",
                                                        "12,5", "nan", "inf", "1e308", "", " ", "\"quoted\"", "a;b"]))


@FUZZ
@given(hs.lists(hs.lists(CELL, min_size=1, max_size=7), min_size=0, max_size=8),
       hs.sampled_from([",", ";", "\t", "|"]), hs.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1"]),
       hs.booleans())
def test_manifests_end_in_a_check_or_a_refusal(tmp_path_factory, rows, sep, enc, header):
    lines = ([["case_id", "image", "sex", "age", "bone_age"]] if header else []) + rows
    text = "\n".join(sep.join(c.replace("\n", " ") for c in r) for r in lines)
    try:
        data = text.encode(enc)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    folder = tmp_path_factory.getbasetemp()

    def run():
        return check_cohort(read_manifest(data), FolderSource(folder), decode=False)

    out = _must_end_well(run)
    if not isinstance(out, Exception):
        assert set(out.problems.severity) <= {"error", "warning"}
        assert out.summary["usable"] == 0  # no image exists in an empty folder


def test_formula_injection_is_neutralised_in_exports():
    import pandas as pd

    text = safe_csv(pd.DataFrame({"case_id": ["=cmd|' /C calc'!A0", "+1", "ok", "@x"], "v": [1, 2, 3, 4]}))
    cells = [line.split(",")[0] for line in text.splitlines()[1:]]
    assert all(not c.lstrip('"').startswith(("=", "+", "@")) for c in cells)
    assert "'=cmd" in text


def test_enormous_fields_and_rows_are_refused(monkeypatch):
    monkeypatch.setenv("KNEEAGE_MAX_FIELD_CHARS", "100")
    with pytest.raises(KneeageError, match="row 2 column 2 has 500 characters, over the limit of 100"):
        read_manifest(("case_id,image\n1," + "x" * 500).encode())
    monkeypatch.setenv("KNEEAGE_MAX_FILES", "3")
    with pytest.raises(KneeageError, match="4 rows, over the limit of 3"):
        read_manifest("case_id,image\n1,a\n2,b\n3,c\n4,d".encode())
    monkeypatch.setenv("KNEEAGE_MAX_UPLOAD_MB", "0.001")
    with pytest.raises(KneeageError, match="over the upload limit"):
        read_manifest(("case_id,image\n" + "1,a\n" * 1000).encode())


def _zip_with(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


@FUZZ
@given(hs.integers(0, 10_000), hs.binary(min_size=0, max_size=64), hs.integers(0, 3))
def test_damaged_zips_end_in_members_or_a_refusal(pos, junk, mode):
    good = _zip_with([("manifest.csv", "case_id,image\n1,a.dcm\n"), ("a.dcm", SEEDS["phantom.dcm"])])
    data = bytearray(good)
    p = pos % len(data)
    if mode == 0:
        data[p:p + len(junk)] = junk
    elif mode == 1:
        del data[p:]
    elif mode == 2:
        data[p:p] = junk
    else:
        data = bytearray(junk)

    def run():
        src = ZipSource(bytes(data), "fuzz.zip")
        for n in src.names():
            got = src.read(n)
            if n.endswith(".dcm"):
                load_radiograph(got, name=n)
        return src

    _must_end_well(run)


def test_folder_source_never_reads_outside_the_folder(tmp_path):
    inside = tmp_path / "images"
    inside.mkdir()
    (tmp_path / "secret.dcm").write_bytes(SEEDS["phantom.dcm"])
    (inside / "link.dcm").symlink_to(tmp_path / "secret.dcm")
    src = FolderSource(inside)
    for name in ("../secret.dcm", "link.dcm", "/etc/passwd", "C:\\Windows\\x.dcm", "sub/../../secret.dcm"):
        assert "leaves the images folder" in src.problem(name)
        with pytest.raises(KneeageError, match="leaves the images folder"):
            src.read(name)
