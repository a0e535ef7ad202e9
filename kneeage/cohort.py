"""Validation cohorts: the manifest schema, image sources (a folder or a zip) and the dry-run check.

Manifest (CSV, one row per case; headers are case-insensitive):

* ``case_id`` — a pseudonymous id (required, unique);
* ``image`` — the file, relative to the images folder or zip (required);
* ``sex`` — F/M (female/male, girl/boy accepted);
* chronological age — ``chronological_age_months`` or ``_years``, or ``chronological_age`` / ``age``
  with a unit column (``age_unit``: months/years), or ``birth_date`` + ``study_date``;
* reference bone age — ``reference_bone_age_months`` / ``_years``, or ``reference_bone_age`` /
  ``bone_age`` with ``bone_age_unit``;
* optional ``reference_method``, ``reader``, ``crop_box`` ("x0,y0,x1,y1"), ``pixel_spacing_mm`` (patient plane,
  for files without a DICOM header), and comparator estimates:
  any other ``<name>_bone_age_months`` / ``_years`` column (e.g. ``fels_bone_age_months``).

Without a unit the ages are taken as years when every value is at most 21, else months, and the check
says so. Identifying columns (names, patient ids, accession numbers, dates) are dropped on ingest
unless the site opts in. Row numbers in messages are the CSV line numbers (the header is line 1).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import stat
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import pandas as pd

from .config import check_upload, limit
from .conventions import MAX_AGE_MONTHS, SEXES, is_knee_part, parse_sex
from .errors import InputError, KneeageError
from .imaging import Radiograph, age_months, load_radiograph
from .preprocess import parse_box

IDENTIFYING = {"patient_name", "name", "patient_id", "mrn", "accession", "accession_number", "birth_date",
               "date_of_birth", "dob", "study_date", "exam_date", "patient_birth_date", "address", "phone"}
_ALIASES = {"case": "case_id", "id": "case_id", "image_file": "image", "file": "image", "filename": "image",
            "path": "image", "gender": "sex", "dob": "birth_date", "date_of_birth": "birth_date",
            "exam_date": "study_date"}


# ------------------------------------------------------------------------------ image sources


@dataclass(frozen=True)
class SourceRef:
    """What a cohort's images are, as the study database keeps it (:meth:`text`) so a later process can open
    them again (:func:`open_source`):

    * ``folder``: a folder on this server (``path``);
    * ``zip``: a zip file on this server (``path``), the manifest's folder inside it ``base``;
    * ``upload``: a zip uploaded in the browser (``path`` is its file name): kept in memory only, never
      stored, so only the same upload opens it again;
    * ``predictions``: no images, predictions made elsewhere (``path`` is the manifest's name).
    """

    kind: str
    path: str = ""
    base: str = ""

    KINDS = ("folder", "zip", "upload", "predictions")

    def text(self) -> str:
        """The stored form: "folder:PATH", "zip:PATH!BASE", "upload:NAME" or "predictions:NAME"."""
        return f"{self.kind}:{self.path}" + (f"!{self.base}" if self.kind == "zip" else "")

    @classmethod
    def parse(cls, text: str | None) -> SourceRef | None:
        """The reference a stored text names; None for an empty or unknown one."""
        kind, _, rest = (text or "").partition(":")
        if kind not in cls.KINDS:
            return None
        path, _, base = rest.partition("!") if kind == "zip" else (rest, "", "")
        return cls(kind, path, base)

    @property
    def has_images(self) -> bool:
        return self.kind != "predictions"


class ImageSource:
    """Where the manifest's image files live. ``problem(name)`` says why a file cannot be read (None when it
    can); ``read(name)`` returns the bytes or raises InputError with that reason; ``ref`` (:class:`SourceRef`)
    says what it is, so a later process can open the same source to resume a run."""

    label = ""
    ref: SourceRef

    def problem(self, name: str) -> str | None:
        raise NotImplementedError

    def _read(self, name: str, cap: int) -> bytes:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        why = self.problem(name)
        if why:
            raise InputError(f"{name} {why}.")
        cap = int(limit("max_member_mb") * 2**20)
        data = self._read(name, cap)  # at most cap + 1 bytes, whatever the header claims
        if len(data) > cap:
            raise InputError(f"{name} {_too_big(cap + 1)}.")
        return data


def _too_big(size: int) -> str:
    return (f"is refused: it unpacks to {size / 2**20:.0f} MB or more, over the limit of {limit('max_member_mb'):g} MB "
            "for one image (KNEEAGE_MAX_MEMBER_MB)")


def _clean_member(name: str) -> str | None:
    """A safe relative POSIX path, or None for absolute paths and '..' traversal."""
    p = PurePosixPath(str(name).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", str(name)):
        return None
    return str(p)


class FolderSource(ImageSource):
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InputError(f"{root}: the images folder does not exist.")
        self.label = str(self.root)
        self.ref = SourceRef("folder", str(self.root))

    def problem(self, name: str) -> str | None:
        rel = _clean_member(name)
        if rel is None:
            return "is refused: its path leaves the images folder"
        p = (self.root / rel).resolve()
        if self.root not in p.parents:
            return "is refused: its path leaves the images folder (through a link)"
        try:
            st = p.stat()
        except OSError:
            return f"is not in {self.label}"
        if not stat.S_ISREG(st.st_mode):
            return "is refused: it is not a regular file (a folder, pipe or device)"
        if st.st_size > limit("max_member_mb") * 2**20:
            return _too_big(st.st_size)
        return None

    def _read(self, name: str, cap: int) -> bytes:
        with open(self.root / _clean_member(name), "rb") as f:
            # sized to the file: read(cap + 1) alone sets up a cap-sized buffer (512 MB by default), which
            # cost 7 ms on a 6.8 MB file against 1.3 ms (bench/validation_1000.py); a file that grew since
            # stat is read on, still to at most cap + 1 bytes
            size = os.fstat(f.fileno()).st_size
            data = f.read(min(size, cap) + 1)
            if size < len(data) <= cap:
                data += f.read(cap + 1 - len(data))
            return data


class ZipSource(ImageSource):
    """Images inside a zip archive, refusing traversal, links, nested archives and zip bombs. A zip on disk
    is read member by member, never loaded whole."""

    def __init__(self, data: bytes | str | Path, label: str = "upload.zip", base: str = ""):
        self.path = None
        if isinstance(data, (str, Path)):
            self.path = Path(data).resolve()
            label = Path(data).name
        self.label = label
        self.base = base  # the manifest's folder inside the archive: image paths are relative to it
        try:
            self.zf = zipfile.ZipFile(self.path or io.BytesIO(data))
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise InputError(f"{label}: not a readable zip archive ({e}).") from None
        if len(infos) > limit("max_files"):
            raise InputError(f"{label}: {len(infos)} files, over the limit of {limit('max_files'):g} (KNEEAGE_MAX_FILES).")
        total = sum(i.file_size for i in infos)
        if total > limit("max_unpacked_gb") * 2**30:
            raise InputError(f"{label}: it would unpack to {total / 2**30:.1f} GiB, over the limit of "
                             f"{limit('max_unpacked_gb'):g} GiB (KNEEAGE_MAX_UNPACKED_GB).")
        self.members: dict[str, zipfile.ZipInfo] = {}
        self.refused: dict[str, str] = {}
        for i in infos:
            if i.is_dir():
                continue
            rel = _clean_member(i.filename)
            if rel is None:
                self.refused[i.filename] = "its path leaves the archive"
            elif stat.S_ISLNK(i.external_attr >> 16):
                self.refused[rel] = "it is a symbolic link"
            elif i.compress_size and i.file_size / i.compress_size > limit("max_member_ratio"):
                self.refused[rel] = f"it expands {i.file_size // max(i.compress_size, 1)}-fold (a zip bomb?)"
            elif i.file_size > limit("max_member_mb") * 2**20:
                self.refused[rel] = _too_big(i.file_size).removeprefix("is refused: ")
            else:
                self.members[rel] = i

    @property
    def ref(self) -> SourceRef:
        return SourceRef("zip", str(self.path), self.base) if self.path else SourceRef("upload", self.label)

    def at(self, base: str) -> ZipSource:
        """The same archive with image paths relative to ``base`` (a folder inside it); nothing is re-read."""
        other = object.__new__(ZipSource)
        other.__dict__.update(self.__dict__, base=base)
        return other

    def names(self) -> list[str]:
        return sorted(self.members)

    def _resolve(self, name: str) -> str | None:
        rel = _clean_member(name)
        inside = f"{self.base}/{rel}"
        if rel is not None and self.base and (inside in self.members or inside in self.refused):
            return inside
        return rel

    def problem(self, name: str) -> str | None:
        rel = self._resolve(name)
        if rel is None:
            return f"is refused in {self.label}: its path leaves the archive"
        if rel in self.refused:
            return f"is refused in {self.label}: {self.refused[rel]}"
        return None if rel in self.members else f"is not in {self.label}"

    def _read(self, name: str, cap: int) -> bytes:
        try:
            with self.zf.open(self.members[self._resolve(name)]) as f:  # streamed: at most cap + 1 bytes in memory
                data = f.read(cap + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError, ValueError) as e:
            raise InputError(f"{name} cannot be read from {self.label} ({e}).") from None
        if data[:4] == b"PK\x03\x04":
            raise InputError(f"{name}: it is a zip archive inside the archive; unpack it first.")
        return data


def open_source(ref: SourceRef | str | None, uploaded: ImageSource | None = None) -> ImageSource:
    """The images of a stored cohort (its :class:`SourceRef`, or the stored text): a folder or a zip on this
    server is opened again; an uploaded zip only from ``uploaded``, the same upload in this session."""
    r = ref if isinstance(ref, SourceRef) else SourceRef.parse(ref)
    if r is not None and r.kind == "predictions":
        raise InputError("the predictions were made elsewhere; this cohort has no images.")
    if r is not None and r.kind == "folder":
        return FolderSource(r.path)
    if r is not None and r.kind == "zip" and Path(r.path).is_file():
        return ZipSource(r.path, base=r.base)
    if r is not None and r.kind == "upload" and uploaded is not None and uploaded.ref == r:
        return uploaded
    shown = r.text() if r is not None else (ref or "this cohort")
    raise InputError(f"{shown}: its images are not available (uploaded zips are kept in memory "
                     f"only, never stored); upload the same zip again and check it to continue.")


def manifest_in(source: ImageSource) -> tuple[bytes, ImageSource] | None:
    """The manifest shipped with the images, if any, and the source whose image paths are relative to the
    manifest's folder: manifest.csv at any depth of a zip (the shallowest), or at the top of a folder."""
    if isinstance(source, FolderSource):
        return (source.read("manifest.csv"), source) if source.problem("manifest.csv") is None else None
    if not isinstance(source, ZipSource):
        return None
    found = sorted((n for n in source.members if PurePosixPath(n).name.lower() == "manifest.csv"),
                   key=lambda n: n.count("/"))
    if not found:
        return None
    return source.read(found[0]), source.at(str(PurePosixPath(found[0]).parent).strip("."))


def manifest_hint(source: ImageSource) -> str:
    """Why there is no manifest yet, and how to give one (a zip or folder without manifest.csv)."""
    where = "zip" if isinstance(source, ZipSource) else "folder"
    return (f"The {where} has no manifest.csv, so kneeage does not know which image is which case. Upload the manifest "
            f"CSV below, or put a file named manifest.csv {'in the zip' if where == 'zip' else 'at the top of the folder'} "
            "(columns: case_id, image, sex, chronological age, reference_bone_age_months; image paths relative to it).")


def reference_problem(check: "CohortCheck") -> str | None:
    """Why a cohort without reference bone ages cannot be validated (None when some cases have one)."""
    if check.summary.get("with_reference", 0) or check.summary.get("predictions"):
        return None
    return ("The manifest gives no reference bone age (column reference_bone_age_months, or bone_age with its unit), so "
            "there is nothing to validate the model against. Add the column and check again, or run for predictions "
            "only: every case gets the model's estimate, and no agreement statistics are computed.")


# ------------------------------------------------------------------------------- the manifest


@dataclass
class CohortCheck:
    """The dry run: usable cases (normalised columns), problems with row and reason, assumptions."""

    cases: pd.DataFrame
    problems: pd.DataFrame
    assumptions: list[str]
    summary: dict
    inputs: dict = field(default_factory=dict, repr=False)  # case_id → (model input, body part, model hash)

    @property
    def errors(self) -> pd.DataFrame:
        return self.problems[self.problems.severity == "error"]

    def fingerprint(self, name: str, site: str) -> str:
        """The cohort's id: a fingerprint of site, name and cases, so storing the same cohort again (e.g. after
        a crash) finds the stored one."""
        key = pd.util.hash_pandas_object(self.cases.astype(str), index=False).values.tobytes()
        return hashlib.sha256(f"{site}\0{name}\0".encode() + key).hexdigest()[:12]


def _norm_header(h: str) -> str:
    h = re.sub(r"[^0-9a-z]+", "_", str(h).strip().lstrip("\ufeff").lower()).strip("_")
    return _ALIASES.get(h, h)


def read_manifest(source, name: str = "manifest.csv", images: bool = True) -> pd.DataFrame:
    """Read a CSV (path, bytes or text), any common encoding and separator; headers normalised. With
    ``images=False`` (predictions made elsewhere, :mod:`kneeage.predictions`) no image column is needed."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    if isinstance(data, str):
        data = data.encode()
    check_upload(name, len(data))
    if not data.strip():
        raise InputError(f"{name}: the manifest is empty.")
    text = None
    for enc in ("utf-8-sig", "utf-16", "cp1252", "latin-1"):
        try:
            text = data.decode(enc)
            if enc == "utf-16" and data[:2] not in (b"\xff\xfe", b"\xfe\xff"):
                continue
            break
        except UnicodeDecodeError:
            continue
    header, rows = _parse_csv(text, name)
    if len(rows) > limit("max_files"):
        raise InputError(f"{name}: {len(rows)} rows, over the limit of {limit('max_files'):g} (KNEEAGE_MAX_FILES).")
    df = pd.DataFrame(rows, columns=header, dtype=object)
    df.columns = [_norm_header(c) for c in df.columns]
    dup = df.columns[df.columns.duplicated()]
    if len(dup):
        raise InputError(f"{name}: column {dup[0]!r} appears twice.")
    missing = [need for need in (("case_id", "image", "sex") if images else ("case_id",)) if need not in df.columns]
    if missing:  # one message about the header, not one per row
        raise InputError(f"{name}: the header has no {' or '.join(repr(m) for m in missing)} column (columns: "
                         f"{', '.join(df.columns)}); add it and check again.")
    return df


def _parse_csv(text: str, name: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of CSV text: the separator sniffed among , ; tab |; blank lines skipped; short
    rows padded with empty cells; long rows, oversized cells and malformed quoting refused."""
    try:
        sep = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
    except csv.Error:
        sep = ","
    max_chars = int(limit("max_field_chars"))
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    header, rows = None, []
    # The csv module's own field limit (process-wide, so never changed here: other sessions parse at the same
    # time) is the backstop; the precise check is per cell below.
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            for k, c in enumerate(cells):
                if len(c) > max_chars:
                    raise InputError(f"{name}: row {reader.line_num} column {k + 1} has {len(c)} characters, over "
                                     f"the limit of {max_chars} (KNEEAGE_MAX_FIELD_CHARS).")
            cells = [c.strip() for c in cells]
            if header is None:
                header = cells
            elif len(cells) > len(header):
                raise InputError(f"{name}: row {reader.line_num} has {len(cells)} fields but the header has {len(header)}.")
            else:
                rows.append(cells + [""] * (len(header) - len(cells)))
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise InputError(f"{name}: row {reader.line_num} has a cell over the limit of "
                             f"{min(max_chars, csv.field_size_limit())} characters (KNEEAGE_MAX_FIELD_CHARS).") from None
        raise InputError(f"{name}: the manifest is not a readable CSV (row {reader.line_num}: {e}).") from None
    if header is None:
        raise InputError(f"{name}: the manifest is empty.")
    return header, rows


def _number(v) -> float:
    """A number from manifest text (decimal comma accepted); NaN when empty or not a number."""
    try:
        x = float(str(v).strip().replace(",", "."))
    except ValueError:
        return np.nan
    return x if np.isfinite(x) else np.nan


def _age_column(df: pd.DataFrame, stem: str, aliases: tuple[str, ...], unit_cols: tuple[str, ...],
                what: str, assumptions: list[str]) -> tuple[pd.Series, pd.Series] | None:
    """(values in months, raw text) for an age-like column, with its unit made explicit."""
    if f"{stem}_months" in df:
        return df[f"{stem}_months"].map(_number), df[f"{stem}_months"]
    if f"{stem}_years" in df:
        return df[f"{stem}_years"].map(_number) * 12, df[f"{stem}_years"]
    col = next((c for c in (stem, *aliases) if c in df), None)
    if col is None:
        return None
    vals = df[col].map(_number)
    unit_col = next((u for u in unit_cols if u in df), None)
    if unit_col:
        units = df[unit_col].str.lower().str.strip()
        years = units.str.startswith("y")
        assumptions.append(f"{what}: unit taken from column {unit_col!r} row by row.")
    else:
        finite = [v for v in vals if np.isfinite(v)]
        as_years = bool(finite) and max(finite) <= 21
        years = pd.Series(as_years, index=df.index)
        assumptions.append(f"{what}: column {col!r} has no unit; read as {'years' if as_years else 'months'} "
                           f"because the largest value is {max(finite) if finite else 'absent'}.")
    return vals.where(~years.to_numpy(bool), vals * 12), df[col]


def _date(v: str) -> date | None:
    try:
        return pd.to_datetime(v, errors="raise").date() if str(v).strip() else None
    except (ValueError, TypeError):
        return None


def check_cohort(manifest: pd.DataFrame, images: ImageSource, workers: int = 2, decode: bool = True,
                 progress=None, model=None, opt_in_identifying: bool = False) -> CohortCheck:
    """The dry run. Every problem is a row: CSV line, case id, severity (error excludes the case,
    warning keeps it) and one sentence. ``decode`` opens every image (readability, duplicates by
    content, header body part); with a ``model`` (a :class:`kneeage.predict.Predictor`), each image's
    input for it (float16, framed as the model frames it) is kept for the run that follows, so images are
    decoded once."""
    df = manifest.copy()
    problems: list[dict] = []

    def problem(i, severity, text):
        problems.append({"row": int(i) + 2, "case_id": str(df.at[i, "case_id"]), "severity": severity, "problem": text})

    out, assumptions, chron, ref = _normalise(df, opt_in_identifying)
    _check_rows(df, out, chron, ref, images, problem)
    decoded: dict = {}
    if decode:
        bad_rows = {p["row"] for p in problems if p["severity"] == "error"}
        decoded = _decode(df, out, images, [i for i in df.index if i + 2 not in bad_rows], workers, model, progress, problem)
    probs = pd.DataFrame(problems, columns=["row", "case_id", "severity", "problem"]).sort_values(["row", "severity"], kind="stable")
    bad_rows = set(probs.row[probs.severity == "error"])
    usable = out[~out.row.isin(bad_rows)].reset_index(drop=True)
    for col in usable.columns:
        if col.endswith("_months") or col.startswith("comparator_"):
            usable[col] = pd.to_numeric(usable[col], errors="coerce").astype(float)
    ages = usable.chronological_age_months.dropna()
    summary = {
        "rows": int(len(df)), "usable": int(len(usable)), "excluded": int(len(df) - len(usable)),
        "errors": int((probs.severity == "error").sum()), "warnings": int((probs.severity == "warning").sum()),
        "sexes": {k: int(v) for k, v in usable.sex.value_counts().items()},
        "age_range_months": [float(ages.min()), float(ages.max())] if len(ages) else None,
        "with_reference": int(usable.reference_bone_age_months.notna().sum()),
    }
    return CohortCheck(usable, probs.reset_index(drop=True), assumptions, summary,
                       {k: v for k, v in decoded.items() if k in set(usable.case_id)})


def _normalise(df: pd.DataFrame, opt_in_identifying: bool):
    """The manifest in the stored form (ages in months, sex F/M, comparators, identifying columns dropped
    unless opted in), the assumptions made on the way, and the raw age columns (for the row checks)."""
    assumptions: list[str] = []
    chron = _age_column(df, "chronological_age", ("age", "chronological_age_at_study"), ("age_unit", "unit"),
                        "chronological age", assumptions)
    ref = _age_column(df, "reference_bone_age", ("bone_age", "reference"), ("bone_age_unit", "unit"),
                      "reference bone age", assumptions)
    out = pd.DataFrame({"row": df.index + 2, "case_id": df["case_id"], "image": df["image"]})
    out["sex"] = df["sex"].map(parse_sex) if "sex" in df else None
    if chron is not None:
        out["chronological_age_months"] = chron[0]
    elif {"birth_date", "study_date"} <= set(df.columns):
        out["chronological_age_months"] = [age_months(_date(b), _date(s)) for b, s in zip(df.birth_date, df.study_date)]
        assumptions.append("chronological age: computed from birth_date and study_date (the dates are not stored).")
    else:
        out["chronological_age_months"] = np.nan
        assumptions.append("chronological age: no column; SDS and the chronological-age baseline are unavailable.")
    out["reference_bone_age_months"] = ref[0] if ref is not None else np.nan
    if ref is None:
        assumptions.append("reference bone age: no column; the model runs but agreement cannot be computed.")
    for opt in ("reference_method", "reader", "crop_box"):
        out[opt] = df[opt] if opt in df else ""
    if "pixel_spacing_mm" in df:  # files without a header (PNG, JPEG, TIFF): the site states the spacing
        out["pixel_spacing_mm"] = df["pixel_spacing_mm"].map(_number)
    comparators = [c for c in df.columns if re.fullmatch(r"(?!reference_)\w+_bone_age_(months|years)", c)]
    for c in comparators:
        name = re.sub(r"_bone_age_(months|years)$", "", c)
        vals = df[c].map(_number)
        out[f"comparator_{name}"] = vals * (12 if c.endswith("_years") else 1)
    if comparators:
        assumptions.append(f"comparators: {', '.join(comparators)}.")
    dropped = sorted(set(df.columns) & IDENTIFYING)
    if dropped and not opt_in_identifying:
        assumptions.append(f"identifying columns dropped, not stored: {', '.join(dropped)}.")
    elif dropped:
        for c in dropped:
            out[f"identifying_{c}"] = df[c]
        assumptions.append(f"identifying columns kept because the site opted in: {', '.join(dropped)}.")
    return out, assumptions, chron, ref


def _check_rows(df: pd.DataFrame, out: pd.DataFrame, chron, ref, images: ImageSource, problem) -> None:
    """Each row's problems without opening an image: ids, the image's name, sex, ages, the crop box."""
    has_chron = chron is not None or {"birth_date", "study_date"} <= set(df.columns)
    seen_ids: dict[str, int] = {}
    for i in df.index:
        cid, img = str(df.at[i, "case_id"]), str(df.at[i, "image"])
        if not cid:
            problem(i, "error", "the case id is empty")
        elif cid in seen_ids:
            problem(i, "error", f"case id {cid!r} repeats row {seen_ids[cid]}")
        else:
            seen_ids[cid] = i + 2
        if not img:
            problem(i, "error", "the image column is empty")
        elif why := images.problem(img):
            problem(i, "error", f"image file {img!r} {why}")
        raw_sex = df.at[i, "sex"] if "sex" in df else ""
        if pd.isna(out.at[i, "sex"]):
            problem(i, "error", f"sex {raw_sex!r} is not F or M" if raw_sex else "sex is missing")
        for col, what, given in (("chronological_age_months", "chronological age", has_chron),
                                 ("reference_bone_age_months", "reference bone age", ref is not None)):
            v = out.at[i, col]
            src = chron if col.startswith("chron") else ref
            raw = str(src[1].iloc[i]).strip() if src is not None else ""
            if pd.isna(v) and raw:
                problem(i, "error", f"{what} {raw!r} is not a number")
            elif pd.isna(v):
                if given:
                    problem(i, "warning", f"{what} is missing")
            elif not 0 <= v <= MAX_AGE_MONTHS:
                problem(i, "error", f"{what} {v:.1f} months is outside 0-{MAX_AGE_MONTHS:.0f} months")
        try:
            parse_box(out.at[i, "crop_box"])
        except KneeageError as e:
            problem(i, "error", str(e).rstrip("."))


def _decode(df: pd.DataFrame, out: pd.DataFrame, images: ImageSource, todo: list, workers: int, model,
            progress, problem) -> dict:
    """Open the images of the rows in ``todo``: readability, duplicates by content, the header's body part;
    with a ``model``, each image's input for it (float16) by case id, as (input, body part, model hash)."""
    decoded: dict = {}
    spacing = out["pixel_spacing_mm"] if "pixel_spacing_mm" in out else pd.Series(np.nan, out.index)
    jobs = [(i, str(df.at[i, "image"]), out.at[i, "crop_box"], spacing[i]) for i in todo]

    def load(job):
        """Streaming: each thread reads, decodes and makes the model input of one image, and hands on only
        what is kept (hash, body part, the small input), so no full-size image waits in memory."""
        i, name, crop_box, spacing_mm = job
        try:
            case = read_case(images, name, crop_box, spacing_mm)
        except (KneeageError, OSError) as e:
            return i, None, None, None, str(e).rstrip(".")
        rad, x, x_error = case.radiograph, None, None
        if model is not None:
            try:
                x = model.prepare(rad.pixels, case.box, case.spacing_mm).astype(np.float16)
            except KneeageError as e:
                x_error = str(e).rstrip(".")
        return i, rad.content_hash, rad.body_part, x, x_error

    hashes: dict[str, int] = {}
    with ThreadPoolExecutor(workers) as pool:
        for k, (i, digest, body_part, x, x_error) in enumerate(pool.map(load, jobs)):
            if progress:
                progress(k + 1, len(todo))
            if digest is None:
                problem(i, "error", f"unreadable: {x_error}")
                continue
            out.at[i, "image_hash"] = digest
            if digest in hashes:
                problem(i, "error", f"the image is identical to row {hashes[digest]}'s")
                continue
            hashes[digest] = i + 2
            if not is_knee_part(body_part):
                problem(i, "warning", f"the DICOM header says body part {body_part!r}, not a knee")
            if model is not None:
                if x_error:
                    problem(i, "error", x_error)
                    continue
                decoded[str(df.at[i, "case_id"])] = (x, body_part, model.hash)
    return decoded


# ------------------------------------------------------------------------ reading one case's image


@dataclass(frozen=True)
class CaseImage:
    """One case's radiograph with where to look: the manifest's crop box (else ``"auto"`` or the caller's
    default) and the pixel spacing (the header's, else the manifest's; None when neither gives one)."""

    radiograph: Radiograph
    box: tuple[int, int, int, int] | str
    spacing_mm: tuple[float, float] | float | None


def read_case(source: ImageSource | Path, image: str, crop_box=None, spacing_mm=None, default_box: str = "auto") -> CaseImage:
    """Read and decode a case's image from an image source, or from a folder on this machine (a training or
    evaluation manifest's own folder, whose paths are trusted), with its region and pixel spacing."""
    if isinstance(source, Path):
        rad = load_radiograph(source / image)
    else:
        rad = load_radiograph(source.read(image), name=image)
    given = _number(spacing_mm) if spacing_mm is not None else np.nan
    return CaseImage(rad, parse_box(crop_box) or default_box,
                     rad.pixel_spacing_mm or (float(given) if np.isfinite(given) else None))


def spacing_column(image_column: str) -> str:
    """The manifest column that states the pixel spacing of ``image_column``'s files (images without a header)."""
    return "pixel_spacing_mm" if image_column == "image" else f"{image_column.removesuffix('_image')}_pixel_spacing_mm"


def check_sexes(df: pd.DataFrame, name: str) -> None:
    """A training or evaluation manifest's sex column must hold F or M; else InputError naming the first bad row."""
    bad = df[~df.sex.isin(SEXES)]
    if len(bad):
        raise InputError(f"{name}: row {bad.index[0] + 2} has sex {bad.sex.iloc[0]!r}; use F or M.")


def frame_images(df: pd.DataFrame, folder: Path, frame: Callable, image_column: str = "image", crop: str = "auto",
                 workers: int | None = None) -> list[np.ndarray]:
    """Every row's image of a training or evaluation manifest (paths relative to ``folder``) as the network's
    input, ``frame(pixels, box, spacing)``, decoded in threads (decoders release the GIL; threads stay safe
    beside torch, where forked processes can crash). A crop_box column overrides ``crop``; a pixel-spacing
    column (:func:`spacing_column`) gives the spacing of files without a header."""
    boxes = df["crop_box"].tolist() if "crop_box" in df.columns else [None] * len(df)
    spc = spacing_column(image_column)
    spacings = pd.to_numeric(df[spc], errors="coerce").tolist() if spc in df.columns else [None] * len(df)

    def one(job):
        case = read_case(folder, *job, default_box=crop)
        return frame(case.radiograph.pixels, case.box, case.spacing_mm)

    jobs = list(zip(df[image_column], boxes, spacings))
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(one, jobs))
    return [one(j) for j in jobs]
