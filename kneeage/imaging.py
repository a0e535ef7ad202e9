"""Decode any radiograph file a hospital might export into one :class:`Radiograph`.

Grayscale convention (as torchxrayvision fixes one): ``pixels`` is float32 in [0, 1] with bone
bright. DICOM goes through the modality LUT, then the VOI LUT or window, then MONOCHROME1 is
inverted; finally the image is min-max scaled to [0, 1]. PNG/JPEG/TIFF are min-max scaled too.

Refusals raise :class:`kneeage.errors.RadiographError` ("<file>: <reason>.").
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
import warnings
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Union

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID

from .config import limit
from .conventions import DAYS_PER_MONTH, SEXES
from .errors import RadiographError

MIN_SIDE = 64


def max_pixels() -> int:
    return int(limit("max_image_megapixels") * 1_000_000)


Source = Union[str, Path, bytes, bytearray, IO[bytes]]

# SOP classes that carry pixel data that is not a radiograph.
_REFUSED_SOP = {
    "1.2.840.10008.5.1.4.1.1.66.4": "it is a segmentation object, not a radiograph",
    "1.2.840.10008.5.1.4.1.1.481.2": "it is an RT dose grid, not a radiograph",
    "1.2.840.10008.5.1.4.1.1.66": "it is a raw data object, not a radiograph",
}
_COLOUR = ("RGB", "YBR", "PALETTE", "ARGB", "CMYK", "HSV")


@dataclass(frozen=True)
class Radiograph:
    """One decoded radiograph: pixels (float32, [0, 1], bone bright) plus metadata."""

    pixels: np.ndarray = field(repr=False, compare=False)
    name: str
    format: str  # "DICOM", "PNG", "JPEG", "TIFF", ...
    content_hash: str  # sha256 of the file's bytes
    sex: str | None = None  # "F" / "M"
    birth_date: date | None = None
    study_date: date | None = None
    chronological_age_months: float | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    laterality: str | None = None
    view: str | None = None
    body_part: str | None = None
    modality: str | None = None
    sop_class_uid: str | None = None
    photometric_interpretation: str | None = None
    bits_stored: int | None = None
    transfer_syntax: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]

    def metadata(self, identifying: bool = False) -> dict:
        """JSON-safe metadata. Dates are identifying and left out unless ``identifying``."""
        d = asdict(self)
        d.pop("pixels")
        d["rows"], d["columns"] = self.shape
        for k in ("birth_date", "study_date"):
            d[k] = d[k].isoformat() if (identifying and d[k]) else None
            if not identifying:
                d.pop(k)
        if d["chronological_age_months"] is not None:
            d["chronological_age_months"] = round(float(d["chronological_age_months"]), 2)
        return d


def _read_source(source: Source, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), name or "<bytes>"
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = name or path.name
        try:
            return path.read_bytes(), label
        except FileNotFoundError:
            raise RadiographError(label, "the file does not exist") from None
        except IsADirectoryError:
            raise RadiographError(label, "it is a folder, not a file") from None
        except OSError as e:
            raise RadiographError(label, f"the file could not be read ({e.strerror})") from None
    if hasattr(source, "read"):
        label = name or Path(getattr(source, "name", "") or "<upload>").name
        if hasattr(source, "seek"):
            source.seek(0)
        return source.read(), label
    raise TypeError(f"load_radiograph takes a path, bytes or a file object, not {type(source).__name__}")


def load_radiograph(source: Source, name: str | None = None) -> Radiograph:
    """Decode a DICOM, PNG, JPEG or TIFF file (path, bytes or file object) into a Radiograph."""
    data, label = _read_source(source, name)
    if not data:
        raise RadiographError(label, "the file is empty")
    quiet_decoders()
    digest = hashlib.sha256(data).hexdigest()
    if _looks_like_dicom(data):
        return _load_dicom(data, label, digest)
    pil = _try_pil(data, label, digest)
    if pil is not None:
        return pil
    # DICOM without the 128-byte preamble (raw data set): try once more, leniently.
    ds = _try_raw_dicom(data)
    if ds is not None:
        return _load_dicom(data, label, digest, ds)
    raise RadiographError(label, "it is not an image file (neither DICOM nor PNG, JPEG or TIFF)")


# --------------------------------------------------------------------------------------- DICOM


def quiet_decoders() -> None:
    """Keep what a damaged file says out of every log. pydicom reports a damaged element by warning *and*
    logging its raw bytes, which can hold the patient's name, ids and dates; Pillow and the JPEG decoders
    warn about damaged metadata. So, process-wide (``warnings.catch_warnings`` is not thread-safe, and
    decoding runs in thread pools): pydicom validates nothing while reading, its logger writes nowhere,
    and the decoders' warnings are ignored. Called before every decode, as a host (pytest, a notebook)
    may have reset the warning filters; ``filterwarnings`` replaces an identical filter, so the list stays short."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    log = logging.getLogger("pydicom")
    if log.propagate or log.handlers:
        log.handlers[:] = [logging.NullHandler()]
        log.propagate = False
    warnings.filterwarnings("ignore", module=r"(pydicom|pylibjpeg|libjpeg|openjpeg|rle|PIL)(\.|$)")


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def _try_raw_dicom(data: bytes):
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        keys = list(ds.keys())
    except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
        return None
    # A real data set starts with group 0008 (or file meta 0002); random bytes parse as junk tags.
    if not keys or not any(int(k) >> 16 in (0x0002, 0x0008) for k in keys):
        return None
    return ds


def _load_dicom(data: bytes, label: str, digest: str, ds=None) -> Radiograph:
    """Decode a DICOM; pydicom parses elements lazily, so a damaged element can fail on any access:
    whatever is not already a refusal becomes one."""
    try:
        return _decode_dicom(data, label, digest, ds)
    except RadiographError:
        raise
    except Exception as e:  # noqa: BLE001 - lazily parsed, damaged elements raise many types
        raise RadiographError(label, f"the DICOM data set is damaged ({_short(e)})") from None


def _decode_dicom(data: bytes, label: str, digest: str, ds=None) -> Radiograph:
    if ds is None:
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
        except Exception as e:  # noqa: BLE001 - pydicom raises many types on corrupt headers
            raise RadiographError(label, f"the DICOM header could not be read ({_short(e)})") from None

    sop = str(ds.get("SOPClassUID", "") or "")
    sop_name = _uid_name(sop)
    if sop in _REFUSED_SOP:
        raise RadiographError(label, _REFUSED_SOP[sop])
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        what = f" ({sop_name})" if sop_name else ""
        raise RadiographError(label, f"the DICOM object{what} contains no image pixel data")
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise RadiographError(label, "it holds floating-point pixel data (a parametric map), not a radiograph")
    modality = _s(ds.get("Modality"))
    if modality in ("RTDOSE", "SEG"):
        raise RadiographError(label, f"it is a {modality} object, not a radiograph")
    frames = _int(ds.get("NumberOfFrames")) or 1
    if frames > 1:
        raise RadiographError(label, f"it is a multi-frame object ({frames} frames); export a single image")
    photometric = _s(ds.get("PhotometricInterpretation")) or ""
    samples = _int(ds.get("SamplesPerPixel")) or 1
    if samples != 1 or photometric.startswith(_COLOUR):
        raise RadiographError(label, f"it is a colour image ({photometric or f'{samples} samples per pixel'}), not a grayscale radiograph")
    rows, cols = _int(ds.get("Rows")) or 0, _int(ds.get("Columns")) or 0
    _check_size(label, rows, cols)

    arr = _native_pixels(ds, rows, cols)
    if arr is None:
        try:
            arr = ds.pixel_array
        except Exception as e:  # noqa: BLE001 - decoders raise many types
            msg = _short(e)
            if "length" in msg.lower() or "truncat" in msg.lower() or "end of" in msg.lower():
                raise RadiographError(label, f"its pixel data is truncated or the wrong length ({msg})") from None
            raise RadiographError(label, f"its pixel data could not be decoded ({msg})") from None
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise RadiographError(label, f"its pixel data has shape {arr.shape}, not a single grayscale image")

    pixels = _linear_scaled(arr, ds, invert=photometric == "MONOCHROME1")
    if pixels is None:
        try:
            out = apply_modality_lut(arr, ds)
            if "VOILUTSequence" in ds or "WindowCenter" in ds:
                out = apply_voi_lut(out, ds, index=0)
        except Exception as e:  # noqa: BLE001 - malformed LUTs
            raise RadiographError(label, f"its modality or VOI LUT is malformed ({_short(e)})") from None
        pixels = _scale01(out)
        if photometric == "MONOCHROME1":
            pixels = 1.0 - pixels

    birth = _dicom_date(ds.get("PatientBirthDate"))
    study = _dicom_date(ds.get("StudyDate")) or _dicom_date(ds.get("AcquisitionDate")) or _dicom_date(ds.get("ContentDate"))
    age = age_months(birth, study)
    if age is None:
        age = _patient_age_months(_s(ds.get("PatientAge")))
    sex = _s(ds.get("PatientSex"))
    spacing_t = _spacing(ds)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return Radiograph(
        pixels=pixels,
        name=label,
        format="DICOM",
        content_hash=digest,
        sex=sex if sex in SEXES else None,
        birth_date=birth,
        study_date=study,
        chronological_age_months=age,
        pixel_spacing_mm=spacing_t,
        laterality=_s(ds.get("ImageLaterality")) or _s(ds.get("Laterality")),
        view=_s(ds.get("ViewPosition")),
        body_part=_s(ds.get("BodyPartExamined")),
        modality=modality,
        sop_class_uid=sop or None,
        photometric_interpretation=photometric or None,
        bits_stored=_int(ds.get("BitsStored")),
        transfer_syntax=str(tsyntax) if tsyntax else None,
    )


_NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # implicit and explicit VR little endian


def _native_pixels(ds, rows: int, cols: int) -> np.ndarray | None:
    """The pixels of an uncompressed little-endian data set, read in place from its bytes: what pydicom's
    ``pixel_array`` returns for it, without its general machinery (most of a CR's decoding time). None
    where pydicom must decide: other transfer syntaxes, 8/16-bit aside, signed values narrower than their
    cells, set bits above BitsStored (pydicom masks them), pixel data of the wrong length."""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    allocated = _int(ds.get("BitsAllocated"))
    stored = _int(ds.get("BitsStored")) or allocated
    signed = _int(ds.get("PixelRepresentation")) == 1
    if syntax not in _NATIVE_LE or allocated not in (8, 16) or not 1 <= (stored or 0) <= allocated:
        return None
    if signed and stored != allocated:
        return None
    data = ds.get("PixelData")
    data = getattr(data, "value", data)
    need = rows * cols * allocated // 8
    if not isinstance(data, bytes) or len(data) not in (need, need + 1):
        return None
    arr = np.frombuffer(data, dtype=f"<{'i' if signed else 'u'}{allocated // 8}", count=rows * cols).reshape(rows, cols)
    if not signed and stored < allocated and int(arr.max()) >> stored:
        return None
    return arr


def _linear_params(ds) -> tuple[float, float, float | None, float | None] | None:
    """(slope, intercept, window centre, window width) when the modality and VOI transforms are linear:
    rescale slope/intercept, then a LINEAR window (DICOM PS3.3 C.11.2.1.2.1) with output range [0, 1].
    None when a LUT sequence, another VOI function or an odd window needs pydicom's general implementation."""
    if any(k in ds for k in ("ModalityLUTSequence", "VOILUTSequence")):
        return None
    if str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper() != "LINEAR":
        return None
    def first(v):  # several windows may be given; pydicom's apply_voi_lut(index=0) takes the first
        return float(v[0] if isinstance(v, (MultiValue, list, tuple)) else v)

    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if centre is not None:
            centre, width = first(centre), first(width)
    except (TypeError, ValueError, IndexError):
        return None
    if not (np.isfinite(slope) and np.isfinite(intercept)) or (centre is not None and not (np.isfinite(centre) and np.isfinite(width) and width > 1)):
        return None
    return slope, intercept, centre, width


def _linear_scaled(arr: np.ndarray, ds, invert: bool) -> np.ndarray | None:
    """The finished pixels of an integer image with linear transforms: modality rescale, window, min-max
    scaling to [0, 1] and the MONOCHROME1 inversion folded into one affine map, computed in float32 from
    the stored integers (a cast, a multiply and an add in place; no float64, no copies, no finiteness
    scan). The transforms are monotonic, so the image's extremes give the scaling and tell whether a
    clip is needed. Equal to applying them one by one within float32 rounding (tests/test_imaging.py).
    None when not applicable."""
    params = _linear_params(ds)
    if params is None or arr.dtype.kind not in "ui" or not arr.size:
        return None
    slope, intercept, centre, width = params
    a, b = slope, intercept  # value = a·x + b, then the window: u = value/(w-1) + (0.5 - (c-0.5)/(w-1))
    if centre is not None:
        a, b = a / (width - 1), (b - (centre - 0.5)) / (width - 1) + 0.5
    extremes = np.array([arr.min(), arr.max()])
    lo, hi = sorted((a * float(extremes[0]) + b, a * float(extremes[1]) + b))
    if centre is not None:
        lo, hi = min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)  # the window's clip, at the extremes
    if hi <= lo:  # a flat image
        return np.full(arr.shape, 1.0 if invert else 0.0, np.float32)
    a, b = a / (hi - lo), (b - lo) / (hi - lo)  # the min-max scaling (the clip below is the window's)
    if invert:
        a, b = -a, 1.0 - b
    a, b = np.float32(a), np.float32(b)
    out = arr.astype(np.float32)  # exact for integers under 2**24
    out *= a
    out += b
    # float32 rounding is monotonic, so the extremes show whether anything left [0, 1] (a window that
    # clips, or a last-bit overshoot): only then is the whole image clipped
    ends = extremes.astype(np.float32) * a + b
    if ends.min() < 0 or ends.max() > 1:
        np.clip(out, 0, 1, out=out)
    return out


def _uid_name(uid: str) -> str:
    if not uid:
        return ""
    try:
        return UID(uid).name if UID(uid).is_valid else ""
    except Exception:  # noqa: BLE001
        return ""


def _s(value) -> str | None:
    if value is None:
        return None
    v = getattr(value, "value", value)
    if isinstance(v, (list, tuple)) or (hasattr(v, "__iter__") and not isinstance(v, (str, bytes))):
        v = "\\".join(str(x) for x in v)
    if isinstance(v, bytes):
        v = v.decode("latin-1", "replace")
    v = str(v).strip().strip("\x00").strip()
    return v or None


def _int(value) -> int | None:
    try:
        v = getattr(value, "value", value)
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _spacing(ds) -> tuple[float, float] | None:
    """Pixel spacing in the patient plane (mm, rows then columns): PixelSpacing when the header gives it
    (already calibrated), else ImagerPixelSpacing (at the detector) divided by
    EstimatedRadiographicMagnificationFactor when that is given (DICOM PS3.3 C.8.11.7); None if unknown."""
    raw, mag = ds.get("PixelSpacing"), 1.0
    if not raw:
        raw = ds.get("ImagerPixelSpacing")
        try:
            mag = float(ds.get("EstimatedRadiographicMagnificationFactor") or 1.0)
        except (TypeError, ValueError):
            mag = 1.0
        mag = mag if 0.5 <= mag <= 3 else 1.0
    try:
        sy, sx = (float(raw[0]) / mag, float(raw[1]) / mag) if raw else (0.0, 0.0)
    except (TypeError, ValueError, IndexError):
        return None
    return (sy, sx) if 0.01 <= sy <= 10 and 0.01 <= sx <= 10 else None


def _dicom_date(value) -> date | None:
    v = _s(value)
    if not v:
        return None
    m = re.fullmatch(r"(\d{4})\.?(\d{2})\.?(\d{2}).*", v)
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def age_months(birth: date | None, study: date | None) -> float | None:
    """Age in months between two dates: days / (365.25 / 12). None when unknown or negative."""
    if birth is None or study is None:
        return None
    days = (study - birth).days
    return days / DAYS_PER_MONTH if days >= 0 else None


def _patient_age_months(v: str | None) -> float | None:
    """DICOM Age String (nnnD/W/M/Y) in months."""
    if not v:
        return None
    m = re.fullmatch(r"(\d{1,3})\s*([DWMY])", v.upper())
    if not m:
        return None
    n = int(m[1])
    return {"D": n / DAYS_PER_MONTH, "W": n * 7 / DAYS_PER_MONTH, "M": float(n), "Y": n * 12.0}[m[2]]


# ------------------------------------------------------------------------------ PNG/JPEG/TIFF


def _try_pil(data: bytes, label: str, digest: str) -> Radiograph | None:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError:
        raise RadiographError(label, f"it is larger than {max_pixels() / 1_000_000:g} megapixels") from None
    except Exception as e:  # noqa: BLE001 - malformed headers
        raise RadiographError(label, f"the image header could not be read ({_short(e)})") from None
    try:
        arr, fmt, bits = _pil_pixels(img, label)
    except RadiographError:
        raise
    except Exception as e:  # noqa: BLE001 - damaged files fail in many places inside Pillow
        raise RadiographError(label, f"its {img.format or 'image'} data is corrupt ({_short(e)})") from None
    return Radiograph(
        pixels=_scale01(arr),
        name=label,
        format=fmt,
        content_hash=digest,
        bits_stored=bits,
        photometric_interpretation="MONOCHROME2",
    )


def _pil_pixels(img, label: str) -> tuple[np.ndarray, str, int | None]:
    """The grayscale array of an opened Pillow image (refusing colour, palette, multi-frame)."""
    fmt = img.format or "image"
    w, h = img.size
    _check_size(label, h, w)
    if getattr(img, "n_frames", 1) > 1:
        raise RadiographError(label, f"it is a multi-frame {fmt} ({img.n_frames} frames); export a single image")
    mode = img.mode
    if mode in ("P", "PA"):
        raise RadiographError(label, "it is a palette (colour-mapped) image, not a grayscale radiograph")
    try:
        img.load()
    except Exception as e:  # noqa: BLE001 - truncated streams and codec errors
        raise RadiographError(label, f"its {fmt} data is truncated or corrupt ({_short(e)})") from None
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(img.convert("RGB")).astype(np.int16)
        if np.abs(rgb - rgb[..., :1]).max() > 3:
            raise RadiographError(label, f"it is a colour image ({mode}), not a grayscale radiograph")
        arr = rgb[..., 0]
        bits = 8
    elif mode in ("LA", "La"):
        arr = np.asarray(img.getchannel(0))
        bits = 8
    else:
        arr = np.asarray(img)
        bits = {"1": 1, "L": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(mode)
        if arr.ndim != 2:
            raise RadiographError(label, f"its {fmt} pixel layout ({mode}) is not a single grayscale channel")
        if bits == 32 and arr.size and arr.max() <= 65535 and arr.min() >= 0 and mode == "I":
            bits = 16  # 16-bit PNGs open as mode "I"
    return arr, fmt, bits


# -------------------------------------------------------------------------------------- common


def _check_size(label: str, rows: int, cols: int) -> None:
    if rows <= 0 or cols <= 0:
        raise RadiographError(label, "the image has no rows or columns")
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise RadiographError(label, f"the image is {cols}x{rows} px, under the minimum of {MIN_SIDE} px a side")
    if rows * cols > max_pixels():
        raise RadiographError(
            label, f"the image is {cols}x{rows} px, over the limit of {max_pixels() / 1_000_000:g} megapixels"
        )


def _scale01(arr) -> np.ndarray:
    a = np.array(arr, dtype=np.float32)  # a copy: scaled in place below
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, np.nanmin(np.where(finite, a, np.nan)) if finite.any() else 0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    a -= lo
    a *= np.float32(1.0 / (hi - lo))
    return np.clip(a, 0, 1, out=a)  # float32 rounding can leave -1e-7


def _short(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = " ".join(lines) if lines else type(e).__name__
    return (msg[:200] + "...") if len(msg) > 200 else msg.rstrip(".")


def to_uint8(pixels: np.ndarray, max_side: int | None = None) -> np.ndarray:
    """An 8-bit copy for display, downsampled (area average) so its longer side is at most max_side."""
    img = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BOX)
    return np.asarray(img)


def png_data_uri(image: np.ndarray) -> str:
    """An image (uint8, grey or RGB) as a PNG data URI, for self-contained reports and figures."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
