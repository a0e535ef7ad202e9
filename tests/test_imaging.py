"""load_radiograph over pydicom's and pydicom-data's real files, and over PIL formats built here."""

import io
import struct
import zlib
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from kneeage import KneeageError
from kneeage.errors import RadiographError
from kneeage.imaging import load_radiograph

ALL_FILES = sorted(pydicom.data.get_testdata_files())


def test_pydicom_data_is_installed():
    names = {Path(f).name for f in ALL_FILES}
    assert {"RG1_UNCI.dcm", "RG3_J2KR.dcm", "MR2_J2KI.dcm"} <= names  # from pydicom-data
    assert len(ALL_FILES) > 200


@pytest.mark.parametrize("path", ALL_FILES, ids=[str(Path(f).relative_to(Path(f).parents[1])) for f in ALL_FILES])
def test_every_test_file_loads_or_is_refused_readably(path):
    try:
        r = load_radiograph(path)
    except KneeageError as e:
        msg = str(e)
        assert msg.startswith(Path(path).name + ": ") and msg.endswith(".")
        assert len(msg) < 400 and "\n" not in msg
        return
    assert r.pixels.dtype == np.float32 and r.pixels.ndim == 2
    assert 0.0 <= float(r.pixels.min()) and float(r.pixels.max()) <= 1.0
    assert min(r.shape) >= 64
    assert len(r.content_hash) == 64


@pytest.mark.parametrize(
    "name, syntax",
    [
        ("CT_small.dcm", "1.2.840.10008.1.2.1"),  # explicit little endian
        ("MR_small_implicit.dcm", "1.2.840.10008.1.2"),  # implicit little endian
        ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),  # explicit big endian
        ("image_dfl.dcm", "1.2.840.10008.1.2.1.99"),  # deflated
        ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),  # RLE
        ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51"),  # JPEG extended
        ("JPEG-LL.dcm", "1.2.840.10008.1.2.4.70"),  # JPEG lossless SV1
        ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),  # JPEG-LS
        ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),  # JPEG 2000 lossless
        ("RG1_J2KI.dcm", "1.2.840.10008.1.2.4.91"),  # JPEG 2000
    ],
)
def test_transfer_syntaxes_decode(name, syntax):
    r = load_radiograph(pydicom.data.get_testdata_file(name))
    assert r.transfer_syntax == syntax
    assert r.pixels.std() > 0.01


def test_jpeg2000_matches_uncompressed_original():
    a = load_radiograph(pydicom.data.get_testdata_file("RG3_UNCR.dcm")).pixels
    b = load_radiograph(pydicom.data.get_testdata_file("RG3_J2KR.dcm")).pixels
    assert np.allclose(a, b, atol=1e-6)  # lossless


@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG3_UNCR.dcm", "RG3_J2KI.dcm"])
def test_monochrome1_cr_comes_out_bone_bright(name):
    r = load_radiograph(pydicom.data.get_testdata_file(name))
    assert r.photometric_interpretation == "MONOCHROME1" and r.modality == "CR"
    raw = pydicom.dcmread(pydicom.data.get_testdata_file(name)).pixel_array.astype(float)
    # MONOCHROME1 stores bone low: the decoded image must be the inverse.
    assert np.corrcoef(raw.ravel()[::97], r.pixels.ravel()[::97])[0, 1] < -0.9


def test_rg3_leg_bone_brighter_than_soft_tissue_brighter_than_air():
    p = load_radiograph(pydicom.data.get_testdata_file("RG3_UNCR.dcm")).pixels
    row = p[int(0.3 * p.shape[0])]
    air, soft, bone = row[500:640].mean(), row[740:780].mean(), row[860:900].mean()
    assert air < 0.15 < soft < bone


@pytest.mark.parametrize(
    "name, words",
    [
        ("rtplan.dcm", "no image pixel data"),
        ("waveform_ecg.dcm", "no image pixel data"),
        ("test-SR.dcm", "no image pixel data"),
        ("liver.dcm", "segmentation"),
        ("rtdose.dcm", "dose"),
        ("SC_rgb.dcm", "colour"),
        ("OBXXXX1A.dcm", "colour"),
        ("emri_small.dcm", "multi-frame"),
        ("MR_truncated.dcm", "pixel data"),
        ("JPEGLSNearLossless_08.dcm", "under the minimum of 64 px"),
        ("README.txt", "not an image file"),
    ],
)
def test_refusals_name_file_and_reason(name, words):
    with pytest.raises(RadiographError) as ei:
        load_radiograph(pydicom.data.get_testdata_file(name))
    assert name in str(ei.value) and words in str(ei.value)
    assert isinstance(ei.value, KneeageError)


def _dicom(pixels, photometric="MONOCHROME2", **tags) -> bytes:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _ramp(h=80, w=96):
    return np.tile(np.linspace(0, 4095, w), (h, 1))


def test_dicom_metadata_and_age_from_dates():
    data = _dicom(_ramp(), PatientSex="F", PatientBirthDate="20150310", StudyDate="20250310",
                  ImageLaterality="L", ViewPosition="AP", BodyPartExamined="KNEE", PixelSpacing=[0.15, 0.15])
    r = load_radiograph(io.BytesIO(data), name="knee.dcm")
    assert (r.sex, r.laterality, r.view, r.body_part, r.modality) == ("F", "L", "AP", "KNEE", "CR")
    assert r.birth_date == date(2015, 3, 10) and r.study_date == date(2025, 3, 10)
    assert r.chronological_age_months == pytest.approx(120.0, abs=0.1)
    assert r.pixel_spacing_mm == (0.15, 0.15) and r.bits_stored == 12
    assert "birth_date" not in r.metadata() and r.metadata(identifying=True)["birth_date"] == "2015-03-10"
    assert r.pixels[0, 0] == 0.0 and r.pixels[0, -1] == 1.0


@pytest.mark.parametrize("age, months", [("012Y", 144.0), ("006M", 6.0), ("052W", 52 * 7 / (365.25 / 12)), ("010D", 10 / (365.25 / 12))])
def test_age_from_patient_age(age, months):
    r = load_radiograph(_dicom(_ramp(), PatientAge=age))
    assert r.chronological_age_months == pytest.approx(months)


def test_monochrome1_is_inverted_and_window_applied():
    m2 = load_radiograph(_dicom(_ramp())).pixels
    m1 = load_radiograph(_dicom(_ramp(), photometric="MONOCHROME1")).pixels
    assert np.allclose(m1, 1 - m2)
    win = load_radiograph(_dicom(_ramp(), WindowCenter=2048, WindowWidth=1024)).pixels
    assert win[0, 0] == 0.0 and win[0, -1] == 1.0
    assert (win == 0).mean() > 0.3 and (win == 1).mean() > 0.3  # clipped outside the window


def test_truncated_dicom_pixel_data_refused():
    data = _dicom(_ramp())
    with pytest.raises(RadiographError, match="cut.dcm: .*(truncated|pixel data)"):
        load_radiograph(data[:-500], name="cut.dcm")


def _png_bytes(arr, mode=None, fmt="PNG", **kw):
    buf = io.BytesIO()
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, fmt, **kw)
    return buf.getvalue()


def test_png_8_and_16_bit_jpeg_tiff():
    ramp8 = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (70, 1))
    for fmt in ("PNG", "JPEG", "TIFF"):
        r = load_radiograph(_png_bytes(ramp8, fmt=fmt), name=f"x.{fmt.lower()}")
        assert r.format == fmt and r.bits_stored == 8
        assert r.pixels[:, 5].mean() < 0.1 and r.pixels[:, -5].mean() > 0.9
    ramp16 = np.tile(np.linspace(0, 60000, 128).astype(np.uint16), (70, 1))
    for fmt in ("PNG", "TIFF"):
        r = load_radiograph(_png_bytes(ramp16, fmt=fmt), name=f"y.{fmt.lower()}")
        assert r.bits_stored == 16 and r.pixels.max() == 1.0
        assert np.allclose(r.pixels[0], np.linspace(0, 1, 128), atol=1e-4)


def test_grayscale_saved_as_rgb_is_accepted_colour_refused():
    g = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (70, 1))
    assert load_radiograph(_png_bytes(np.stack([g, g, g], -1))).shape == (70, 128)
    c = np.stack([g, g[:, ::-1], g], -1)
    with pytest.raises(RadiographError, match="colour"):
        load_radiograph(_png_bytes(c), name="photo.png")


def test_palette_multiframe_tiny_truncated_pil_refused(tmp_path):
    g = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (70, 1))
    pal = io.BytesIO()
    Image.fromarray(g).convert("P").save(pal, "PNG")
    with pytest.raises(RadiographError, match="palette"):
        load_radiograph(pal.getvalue(), name="p.png")
    multi = io.BytesIO()
    Image.fromarray(g).save(multi, "TIFF", save_all=True, append_images=[Image.fromarray(g)])
    with pytest.raises(RadiographError, match="multi-frame"):
        load_radiograph(multi.getvalue(), name="m.tif")
    with pytest.raises(RadiographError, match="under the minimum"):
        load_radiograph(_png_bytes(g[:40, :40]), name="small.png")
    noisy = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
    data = _png_bytes(noisy)
    with pytest.raises(RadiographError, match="trunc.png: .*truncated"):
        load_radiograph(data[: len(data) // 2], name="trunc.png")


def _png_header_only(width, height) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(RadiographError, match="bomb.png: .*megapixels"):
        load_radiograph(_png_header_only(20000, 20000), name="bomb.png")


def test_not_images_and_missing_files(tmp_path):
    for data, name in [(b"%PDF-1.4 hello", "a.pdf"), (b"case_id,sex\n1,F\n", "m.csv"), (b"\0" * 1000, "zeros.bin")]:
        with pytest.raises(RadiographError, match=f"{name}: it is not an image file"):
            load_radiograph(data, name=name)
    with pytest.raises(RadiographError, match="empty"):
        load_radiograph(b"", name="e.dcm")
    with pytest.raises(RadiographError, match="does not exist"):
        load_radiograph(tmp_path / "nope.dcm")


def test_path_bytes_and_file_object_agree(tmp_path):
    data = _dicom(_ramp(), PatientSex="M")
    p = tmp_path / "k.dcm"
    p.write_bytes(data)
    a, b = load_radiograph(p), load_radiograph(data)
    with open(p, "rb") as fh:
        c = load_radiograph(fh)
    assert a.content_hash == b.content_hash == c.content_hash
    assert np.array_equal(a.pixels, c.pixels) and c.name == "k.dcm"


def _previous_release_pixels(ds) -> np.ndarray:
    """How the release before issue #22 turned a data set into pixels (pydicom's pixel_array, a float32
    linear path or pydicom's LUTs, min-max scaling, MONOCHROME1 inversion): the reference the fast
    decode must reproduce."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from kneeage.imaging import _linear_params, _scale01

    arr = ds.pixel_array
    params = _linear_params(ds)
    if params is not None:
        slope, intercept, centre, width = params
        x = np.array(arr, dtype=np.float32)
        if slope != 1 or intercept != 0:
            x *= np.float32(slope)
            x += np.float32(intercept)
        if centre is not None:
            x -= np.float32(centre - 0.5)
            x *= np.float32(1 / (width - 1))
            x += np.float32(0.5)
            np.clip(x, 0, 1, out=x)
    else:
        x = apply_modality_lut(arr, ds)
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            x = apply_voi_lut(x, ds, index=0)
    x = _scale01(x)
    return 1.0 - x if ds.get("PhotometricInterpretation") == "MONOCHROME1" else x


def _variants():
    """Data sets covering the decode paths: phantom CR, pydicom's CR/CT/MR files (MONOCHROME1, signed,
    8- and 16-bit, several transfer syntaxes), and edits of them (slopes, clipping windows, flat images)."""
    from kneeage.phantom import render_knee, write_dicom

    ph = render_knee(90, "M", 2, 128)
    buf = io.BytesIO()
    write_dicom(buf, ph.stored, ph.truth, birth=date(2015, 1, 1), study=date(2024, 1, 1), patient_id="W")
    out = [("phantom CR", pydicom.dcmread(io.BytesIO(buf.getvalue())))]
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "RG1_UNCI.dcm",
                 "RG3_UNCI.dcm", "RG3_UNCR.dcm", "MR_small_RLE.dcm", "JPEG-LL.dcm"):
        out.append((name, pydicom.dcmread(pydicom.data.get_testdata_file(name))))
    edits = []
    for name, ds in out[:6]:
        if ds.get("SamplesPerPixel", 1) != 1:
            continue
        a = pydicom.dcmread(io.BytesIO(_save(ds)))
        a.RescaleSlope, a.RescaleIntercept = -0.75, 100.0  # a falling modality LUT
        b = pydicom.dcmread(io.BytesIO(_save(ds)))
        b.WindowCenter, b.WindowWidth = float(np.median(ds.pixel_array)), float(np.ptp(ds.pixel_array)) / 3 + 2  # clips
        c = pydicom.dcmread(io.BytesIO(_save(ds)))
        c.PhotometricInterpretation = "MONOCHROME1"
        edits += [(f"{name} falling slope", a), (f"{name} clipping window", b), (f"{name} as MONOCHROME1", c)]
    flat = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    flat.PixelData = np.full((flat.Rows, flat.Columns), 700, "<u2").tobytes()
    eight = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    small = (eight.pixel_array >> 2).astype(np.uint8)
    eight.BitsAllocated, eight.BitsStored, eight.HighBit = 8, 8, 7
    eight.PixelData = small.tobytes()
    for k in ("WindowCenter", "WindowWidth"):
        del eight[k]
    return out + edits + [("flat", flat), ("8-bit", eight)]


def _save(ds) -> bytes:
    b = io.BytesIO()
    ds.save_as(b)
    return b.getvalue()


def test_fast_decode_equals_the_previous_release_within_float32_rounding():
    """Issue #22: the native read and the folded affine map give the previous decode's pixels (max error a
    few float32 ulps, far below the model input's float16 precision), and the same model input."""
    from kneeage.imaging import _linear_scaled, _native_pixels
    from kneeage.preprocess import to_input

    fast_paths = 0
    for name, ds in _variants():
        if ds.get("SamplesPerPixel", 1) != 1 or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            continue
        data = _save(ds) if not isinstance(ds, bytes) else ds
        new = load_radiograph(data, name=name).pixels
        old = _previous_release_pixels(pydicom.dcmread(io.BytesIO(data)))
        assert new.dtype == np.float32 and new.shape == old.shape, name
        assert np.abs(new - old).max() <= 1e-6, name
        if min(new.shape) >= 64:
            assert np.abs(to_input(new, 32, "auto") - to_input(old, 32, "auto")).max() <= 1e-5, name
        native = _native_pixels(ds, ds.Rows, ds.Columns)
        if native is not None:
            assert np.array_equal(native, ds.pixel_array), name  # exactly what pydicom reads
        fast_paths += _linear_scaled(ds.pixel_array, ds, False) is not None
    assert fast_paths >= 10


def test_native_read_leaves_odd_data_to_pydicom():
    """Set bits above BitsStored (pydicom masks them) and short pixel data go through pydicom."""
    from kneeage.imaging import _native_pixels

    ds = pydicom.dcmread(io.BytesIO(_dicom(_ramp())))
    assert _native_pixels(ds, ds.Rows, ds.Columns) is not None
    arr = ds.pixel_array.copy()
    arr[0, 0] |= 0xF000
    ds.PixelData = arr.tobytes()
    assert ds.BitsStored < 16 and _native_pixels(ds, ds.Rows, ds.Columns) is None
    assert load_radiograph(_save(ds)).pixels[0, 0] == load_radiograph(_dicom(_ramp())).pixels[0, 0]
    ds.PixelData = arr.tobytes()[:-100]
    assert _native_pixels(ds, ds.Rows, ds.Columns) is None
