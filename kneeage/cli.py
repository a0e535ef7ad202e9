"""Command line: ``python -m kneeage …`` (or ``kneeage …``). Everything the app does can be run headless.

Each command imports what it needs inside its function: that keeps ``--help`` and the light commands from
loading torch, timm and the decoders (seconds) before they start.
"""

from __future__ import annotations

import json
import sys

import click


@click.group()
@click.version_option(package_name=None, version=__import__("kneeage").__version__, prog_name="kneeage")
def main() -> None:
    """kneeage: bone age from knee radiographs, and the tools to validate it."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--identifying", is_flag=True, help="Also print birth and study dates.")
def info(files: tuple[str, ...], identifying: bool) -> None:
    """Print each FILE's metadata as one JSON line, or why it was refused (exit 1 if any was)."""
    from .errors import KneeageError
    from .imaging import load_radiograph

    refused = 0
    for f in files:
        try:
            r = load_radiograph(f)
            out = {"file": f, "ok": True, **r.metadata(identifying)}
        except KneeageError as e:
            refused += 1
            out = {"file": f, "ok": False, "error": str(e)}
        click.echo(json.dumps(out))
    sys.exit(1 if refused else 0)


@main.command()
@click.option("--n", "n", type=click.IntRange(1), required=True, help="Number of subjects.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--size", type=click.IntRange(64, 4096), default=512, show_default=True, help="Image rows (px).")
@click.option("--hands", is_flag=True, help="Also write each subject's hand film.")
@click.option("--format", "fmt", type=click.Choice(["dicom", "png"]), default="dicom", show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Parallel render processes.")
@click.option("--knee-sizes", default="", help="Comma-separated image rows for the knee films, taken in turn "
              "(subject i gets the (i mod k)-th); the hand films keep --size.")
def synth(n, seed, out, size, hands, fmt, workers, knee_sizes):
    """Write a synthetic cohort (phantom DICOMs, manifest.csv, truth.csv). NOT PATIENT DATA."""
    from tqdm import tqdm

    from .phantom import write_cohort

    try:
        sizes = tuple(int(v) for v in knee_sizes.split(",")) if knee_sizes.strip() else None
    except ValueError:
        raise click.BadParameter(f"{knee_sizes!r} is not a comma-separated list of whole numbers", param_hint="--knee-sizes") from None
    if sizes and not all(64 <= v <= 4096 for v in sizes):
        raise click.BadParameter(f"every size must lie in 64-4096 px, not {knee_sizes!r}", param_hint="--knee-sizes")
    with tqdm(total=n, unit="case", disable=None) as bar:
        write_cohort(out, n, seed=seed, size=size, hands=hands, fmt=fmt, workers=workers, knee_sizes=sizes,
                     progress=lambda i, _n: bar.update(1))
    click.echo(f"wrote {n} synthetic cases to {out}/manifest.csv (truth in {out}/truth.csv)")


@main.command()
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Model directory to write.")
@click.option("--label", "label_column", default="reference_bone_age_months", show_default=True, help="Label column.")
@click.option("--image-column", default="image", show_default=True, help="Image column (hand_image for a hand model).")
@click.option("--body-part", type=click.Choice(["knee", "hand"]), default="knee", show_default=True)
@click.option("--arch", default="kneeage_convnext_zepto", show_default=True, help="timm convnext_* or resnet* name, or a kneeage variant.")
@click.option("--input-size", type=click.IntRange(32, 1024), default=256, show_default=True)
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option("--patience", type=click.IntRange(1), default=6, show_default=True)
@click.option("--min-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Never stop early before this epoch (a model from scratch can sit on a plateau at first).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--crop", default="auto", show_default=True, help="full, auto (manifest crop_box wins where given).")
@click.option("--no-sex", is_flag=True, help="Image only: do not give the network the patient's sex.")
@click.option("--chron-age", is_flag=True, help="Also give the network the chronological age.")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False), help="Start the backbone from this (hand) model.")
@click.option("--spacing", "spacing_mm", type=click.FloatRange(0.05, 5), default=None,
              help="Frame in millimetres: the input is INPUT_SIZE px at this many mm per pixel around the region (needs --localiser).")
@click.option("--localiser", type=click.Path(exists=True, file_okay=False), help="Trained localiser directory (python -m kneeage localiser).")
@click.option("--intensity", type=click.Choice(["percentile", "equalise"]), default="percentile", show_default=True,
              help="Grey scale of the input: percentile window, or also histogram-equalised (invariant to gamma and LUTs; needs --spacing).")
@click.option("--augment", type=click.Choice(["auto", "light", "strong"]), default="auto", show_default=True,
              help="Training augmentation: strong (invariance to scale, exposure, gamma, noise, blur) or light; auto = strong when framed in millimetres.")
@click.option("--name", default="kneeage model", show_default=True)
@click.option("--training-data", default="", help="Free-text description of the training data for the model card.")
@click.option("--synthetic-demo", is_flag=True, help="Mark the model as trained on synthetic phantoms (shown with its numbers).")
def train(manifest, out, label_column, image_column, body_part, arch, input_size, folds, epochs, patience, min_epochs,
          batch_size, lr, seed, crop, no_sex, chron_age, init_from, spacing_mm, localiser, intensity, augment, name,
          training_data, synthetic_demo):
    """Train a k-fold ensemble (resumable; runs under torchrun with DDP)."""
    from .model import ModelConfig
    from .train import TrainSettings
    from .train import train as run_train

    if intensity == "equalise" and spacing_mm is None:
        raise click.BadParameter("an equalised input needs physical framing (--spacing)", param_hint="--intensity")
    cfg = ModelConfig(arch=arch, input_size=input_size, use_sex=not no_sex, use_chron_age=chron_age, body_part=body_part,
                      spacing_mm=spacing_mm, intensity=intensity)
    st = TrainSettings(label_column=label_column, image_column=image_column, folds=folds, epochs=epochs,
                       patience=patience, min_epochs=min_epochs, batch_size=batch_size, lr=lr, seed=seed, crop=crop, init_from=init_from,
                       localiser=localiser, augment=augment,
                       training_data=training_data, synthetic_demo=synthetic_demo)
    card = _guard(lambda: run_train(manifest, out, cfg, st, name=name, log=lambda m: click.echo(m, err=True)))
    if card is not None:
        click.echo(json.dumps({"model_dir": out, "oof_mae": card.results["oof_mae"],
                               "interval_coverage": card.interval["oof_coverage"]}))


@main.command()
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--truth", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The phantom cohort's truth.csv (its <image-column>_box column gives the regions).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory to write the localiser to.")
@click.option("--image-column", default="image", show_default=True, help="image (knee) or hand_image.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--max-films", type=click.IntRange(10), default=1200, show_default=True, help="Train on the first N films.")
def localiser(manifest, truth, out, image_column, epochs, max_films):
    """Train the region localiser on phantoms (kneeage.localise); give it to `train --localiser`."""
    from .localise import train_localiser

    loc = _guard(lambda: train_localiser(manifest, truth, out, image_column, epochs, max_films=max_films,
                                         log=lambda m: click.echo(m, err=True)))
    if loc is not None:
        click.echo(json.dumps(loc.info))


@main.command()
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--hand-model", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of updating the manifest.")
@click.option("--column", default="pseudo_bone_age_months", show_default=True)
def pseudolabel(manifest, hand_model, out, column):
    """Label each case by running a hand bone-age model on its paired hand film."""
    from .evaluate import pseudolabel as run

    df = _guard(lambda: run(manifest, hand_model, out, column))
    click.echo(f"wrote {df[column].notna().sum()} pseudo-labels to column {column!r} of {out or manifest}")


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--sex", type=click.Choice(["F", "M"]), help="Patient sex (else taken from each DICOM).")
@click.option("--age", "chron", type=float, help="Chronological age in months (else from the DICOM).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False), help="Model directory (default: the bundled demo).")
@click.option("--crop", default="auto", show_default=True, help="full, auto (the model finds the knee), or x0,y0,x1,y1 in pixels.")
@click.option("--spacing", type=click.FloatRange(0.01, 10), help="Pixel spacing in mm for files without a DICOM header "
              "(else estimated from the anatomy).")
@click.option("--override", is_flag=True, help="Print the number even where the model withholds it (marked as overridden).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def predict(files, sex, chron, model_dir, crop, spacing, override, as_json):
    """Estimate bone age for knee radiographs (exit 1 if any file could not be read)."""
    from .case import analyse
    from .errors import KneeageError
    from .imaging import load_radiograph
    from .predict import Predictor, interval_text

    pred = _guard(lambda: Predictor(model_dir))
    failed = 0
    for f in files:
        try:
            r = load_radiograph(f)
            s = sex or r.sex
            if s not in ("F", "M"):
                raise KneeageError(f"{f}: the file gives no sex; pass --sex F or --sex M.")
            res, _ = analyse(pred, r, s, chron if chron is not None else r.chronological_age_months, crop, spacing, override)
        except KneeageError as e:
            failed += 1
            click.echo(json.dumps({"file": f, "error": str(e)}) if as_json else f"{f}: ERROR {e}")
            continue
        d = res.as_dict() | {"file": f}
        if as_json:
            click.echo(json.dumps(d))
        elif res.withheld:
            click.echo(f"{f}: {d['refusal_text']}")
        else:
            sds = f", SDS {d['bone_age_sds']:+.2f} ({d['sds_category']})" if "bone_age_sds" in d else ""
            demo = "  [synthetic demo model, not clinical]" if d["synthetic_demo"] else ""
            click.echo(f"{f}: bone age {d['bone_age_years_months']} ({d['bone_age_months']:.1f} mo), "
                       f"{d['interval_level']:.0%} interval {interval_text(d['interval_months'])}{sds}; "
                       f"flags: {', '.join(d['flags']) or 'none'}{demo}"
                       + ("  [OVERRIDDEN: the model withheld this number]" if d["overridden"] else ""))
    sys.exit(1 if failed else 0)


DB_OPTION = click.option("--db", metavar="PATH|URL",
                         help="Study database: a SQLite file, sqlite:///PATH or postgresql://USER@HOST/DB "
                              "(default: $KNEEAGE_DATABASE_URL, else studies/kneeage.db).")


def _store(db, must_exist: bool = False):
    """The study database, or one line on stderr and exit status 2 if it cannot be opened."""
    from .store import Store

    return _guard(lambda: Store(db, must_exist=must_exist))


def _guard(fn):
    """Run fn; turn a KneeageError into one line on stderr and exit status 2."""
    from .errors import KneeageError

    try:
        return fn()
    except KneeageError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@main.command()
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--truth", type=click.Path(exists=True, dir_okay=False), help="truth.csv of a synthetic cohort.")
@click.option("--crop", default="auto", show_default=True)
@click.option("--cases", type=click.Path(dir_okay=False), help="Also write per-case predictions (CSV).")
@click.option("--record", metavar="COHORT", help="Also store the result in the model card, under this cohort description.")
def evaluate(model_dir, manifest, truth, crop, cases, record):
    """MAE of a model on a manifest against every reference column (and truth), as JSON."""
    import pandas as pd

    from .evaluate import predict_manifest, record_result, summarise
    from .predict import Predictor

    df = _guard(lambda: predict_manifest(Predictor(model_dir), manifest, crop))
    if cases:
        df.to_csv(cases, index=False)
    result = summarise(df, pd.read_csv(truth) if truth else None)
    if record:
        record_result(model_dir, record, result)
    click.echo(json.dumps(result))


@main.command()
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--images", type=click.Path(exists=True), help="Images folder or a zip archive (not with --predictions).")
@click.option("--predictions", is_flag=True,
              help="No images: validate the manifest's prediction columns (predicted_bone_age_months, <method>_bone_age_months).")
@click.option("--model", "model_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Model directory (kneeage or imported; repeat to run and compare several; default: the bundled demo).")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@DB_OPTION
@click.option("--site", default="site", show_default=True)
@click.option("--name", default=None, help="Cohort name (default: the manifest's file name).")
@click.option("--batch", default=8, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Image-decoding threads.")
@click.option("--identifying", is_flag=True, help="Opt in: keep identifying manifest columns in the database.")
def validate(manifest, images, predictions, model_dirs, out, db, site, name, batch, workers, identifying):
    """Validate one or more models on a cohort: dry-run check, resumable batch run, results and exports.
    Several models (or prediction columns) are also compared pairwise (comparison.csv/.json/.html)."""
    from pathlib import Path

    from tqdm import tqdm

    from . import validation
    from .cohort import FolderSource, ZipSource
    from .predict import Predictor
    from .predictions import NoImages

    if predictions == bool(images):
        click.echo("error: give --images (to run models) or --predictions (predictions made elsewhere), one of them.", err=True)
        sys.exit(2)
    if predictions and model_dirs:
        click.echo("error: --model needs images; a --predictions cohort is validated on its prediction columns.", err=True)
        sys.exit(2)
    if predictions:
        source, preds = NoImages(Path(manifest).name), []
    else:
        preds = [_guard(lambda d=d: Predictor(d)) for d in (model_dirs or [None])]
        source = _guard(lambda: ZipSource(images) if Path(images).is_file() else FolderSource(images))
    bars: dict = {}

    def progress(what, k, n):
        bar = bars.get(what) or bars.setdefault(what, tqdm(total=n, desc=what, unit="case", file=sys.stderr))
        bar.update(k - bar.n)

    def show(check):
        for bar in bars.values():
            bar.close()
        s = check.summary
        click.echo(f"dry run: {s['rows']} rows, {s['usable']} usable, {s['errors']} errors, {s['warnings']} warnings; "
                   f"sexes {s['sexes']}; ages {s['age_range_months']} months", err=True)
        for a in check.assumptions:
            click.echo(f"  assumed: {a}", err=True)
        for p in check.problems.itertuples():
            click.echo(f"  row {p.row} ({p.case_id}): {p.severity}: {p.problem}.", err=True)

    store = _store(db)
    done = _guard(lambda: validation.validate_cohort(
        store, Path(manifest).read_bytes(), source, preds, name=name or Path(manifest).stem, site=site,
        manifest_name=Path(manifest).name, opt_in_identifying=identifying, batch=batch, workers=workers,
        on_check=show, progress=progress))
    for bar in bars.values():
        bar.close()
    _write_runs(store, list(done.run_ids), Path(out))


def _write_runs(store, run_ids: list[str], out) -> None:
    """Exports of each run (into OUT, or OUT/<n>-<model> when there are several) and, for several, their comparison."""
    import re

    from . import compare, plots, report

    several = len(run_ids) > 1
    demo = False
    for k, rid in enumerate(run_ids, 1):
        run = _guard(lambda: report.run_report(store, rid))
        summary, meta = run.summary, run.meta
        demo |= meta["synthetic_demo"]
        where = out / f"{k}-{re.sub(r'[^A-Za-z0-9]+', '-', meta['model_name']).strip('-')[:40]}" if several else out
        paths = report.write_validation(where, run.files)
        click.echo(json.dumps({"model": meta["model_name"], "source": meta["prediction_source"]}
                              | {k2: summary.get(k2) for k2 in ("n", "withheld", "mae", "rmse", "bias", "loa_lower", "loa_upper")}))
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}", err=True)
    if several:
        cmp = _guard(lambda: compare.compare_models(store, run_ids))
        for fname, data in compare.exports(cmp, plots.DEMO_NOTE if demo else None).items():
            (out / fname).write_bytes(data)
        for r in cmp.table.to_dict("records"):
            click.echo(json.dumps({"compare": f"{r['model_a']} vs {r['model_b']}", "n": r["n"],
                                   "mae_difference": r["mae_difference"],
                                   "ci": [r["mae_difference_lower"], r["mae_difference_upper"]], "kappa": r["kappa"]}))
        click.echo(f"wrote {out / 'comparison.csv'}, {out / 'comparison.html'}", err=True)


@main.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@DB_OPTION
def compare_cmd(run_ids, out, db):
    """Compare stored runs of one cohort pairwise (MAE difference, Bland-Altman, delayed/normal/advanced)."""
    from pathlib import Path

    from . import compare

    cmp = _guard(lambda: compare.compare_models(_store(db), list(run_ids)))
    Path(out).mkdir(parents=True, exist_ok=True)
    for fname, data in compare.exports(cmp).items():
        (Path(out) / fname).write_bytes(data)
    click.echo(cmp.table.drop(columns=["note"]).to_csv(index=False), nl=False)


@main.command("import-model")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--card", "card_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The declarative card (TOML; docs/models.md).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Model directory to write, e.g. models/NAME.")
@click.option("--test-image", type=click.Path(exists=True, dir_okay=False), help="A real radiograph to try the model on.")
def import_model_cmd(model_file, card_file, out, test_image):
    """Import an ONNX (.onnx) or TorchScript (.pt) bone-age model with its card, after checking it runs as declared."""
    from .imported import import_model

    card = _guard(lambda: import_model(model_file, card_file, out, test_image))
    check = card.imported["check"]
    click.echo(json.dumps({"model_dir": out, "name": card.name, "format": card.imported["format"],
                           "sha256": card.imported["sha256"], "phantom_outputs_months": check["phantom_outputs_months"]}))


@main.command("export-model")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write (default: ./<model>.onnx or .pt); the card goes beside it (.toml).")
def export_model_cmd(model_dir, fmt, out):
    """Write a kneeage model (all folds, flip averaging, sex input) as one portable file plus its card."""
    from .export import export_model

    path, card = _guard(lambda: export_model(model_dir, fmt, out))
    click.echo(json.dumps({"file": str(path), "card": str(card)}))


@main.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True)
def pool(bundles, out):
    """Pool site bundles: per-site MAE and bias, heterogeneity, pooled estimates (pooled.json, forest.html, and
    report.html: the pooled results with both forest plots)."""
    from pathlib import Path

    from . import paper, plots, validation

    loaded = [_guard(lambda b=b: validation.read_bundle(b)) for b in bundles]
    result = _guard(lambda: validation.pool(loaded)).as_dict()
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "pooled.json").write_text(json.dumps(result, indent=2, default=float))
    plots.pooling_figure(result).write_html(Path(out) / "forest.html", include_plotlyjs=True)
    figs = {f"{what}_by_site": plots.pooling_figure(result, what) for what in ("mae", "bias")}
    demo = any(meta.get("synthetic_demo") for _, meta in loaded)
    (Path(out) / "report.html").write_text(paper.pooled_html(result, figs, demo), encoding="utf-8")
    p = result["pooled"]
    click.echo(json.dumps({"n_sites": result["n_sites"], "n": p["n"], "mae": p["mae"], "bias": p["bias"]}))


@main.command("pi-password")
def pi_password():
    """Set (or change) the PI password on the server, typed twice without echo."""
    from . import access

    current = click.prompt("Current PI password", hide_input=True) if access.pi_configured() else None
    new = click.prompt("New PI password (at least 10 characters)", hide_input=True, confirmation_prompt=True)
    _guard(lambda: access.set_pi_password(new, current))
    click.echo("The PI password is set; only its hash is stored.")


@main.group()
def study():
    """Reader studies: create, invite, status, export (headless administration)."""


@study.command("create")
@click.option("--protocol", type=click.Path(exists=True, dir_okay=False), required=True, help="A studies/*.toml protocol.")
@click.option("--cohort", "cohort_id", help="A stored cohort id (default: the protocol's synthetic cohort).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False), help="Model for the assisted arm.")
@DB_OPTION
def study_create(protocol, cohort_id, model_dir, db):
    """Create a study (rendering the protocol's synthetic cohort if no cohort is given); prints what it made
    and the next steps, then the study id on its own line."""
    from . import readerstudy
    from .predict import Predictor

    p = _guard(lambda: readerstudy.Protocol.load(protocol))
    pred = Predictor(model_dir) if p.assisted else None
    store = _store(db)
    sid = _guard(lambda: readerstudy.setup_study(store, p, pred, cohort_id))
    click.echo(readerstudy.describe(store, sid), err=True)  # what was made and what to do next, for the PI
    click.echo(sid)  # stdout: the id alone, for scripts (SID=$(python -m kneeage study create …))


@study.command("invite")
@click.argument("study_id")
@click.option("--reader", "names", multiple=True, required=True, help="Reader name (repeat for several).")
@DB_OPTION
def study_invite(study_id, names, db):
    """Print one access code per reader (shown once; only a hash is stored)."""
    from . import readerstudy

    store = _store(db)
    _guard(lambda: readerstudy.study_protocol(store, study_id))
    for n in names:
        click.echo(f"{n}\t{readerstudy.invite(store, study_id, n)}")


@study.command("revoke")
@click.argument("study_id")
@click.argument("reader_id")
@DB_OPTION
def study_revoke(study_id, reader_id, db):
    """Withdraw a reader's code; an open reading session stops at its next request. Answers are kept."""
    from . import readerstudy

    _guard(lambda: readerstudy.revoke(_store(db), study_id, reader_id))
    click.echo(f"withdrew the code of reader {reader_id.upper()}")


@study.command("reissue")
@click.argument("study_id")
@click.argument("reader_id")
@DB_OPTION
def study_reissue(study_id, reader_id, db):
    """Print a new code for the same reader and worklist; the old code stops working."""
    from . import readerstudy

    click.echo(_guard(lambda: readerstudy.reissue(_store(db), study_id, reader_id)))


@study.command("status")
@click.argument("study_id")
@DB_OPTION
def study_status(study_id, db):
    """Progress per reader, as JSON lines."""
    from . import readerstudy

    store = _store(db)
    for r in store.readers(study_id).to_dict("records"):
        done, total = readerstudy.progress(store, r)
        click.echo(json.dumps({"reader_id": r["id"], "reader": r["name"], "done": done, "total": total}))


@study.command("export")
@click.argument("study_id")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@DB_OPTION
def study_export(study_id, out, db):
    """reads.csv (all reads, long), analysis.json, analysis.html and audit.csv."""
    from pathlib import Path

    from . import report

    store = _store(db)
    files = _guard(lambda: report.study_exports(store, study_id))
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (Path(out) / name).write_bytes(data)
    click.echo(f"wrote {', '.join(files)} to {out}")


@study.command("plan")
@click.option("--effect", type=float, required=True, help="Difference in MAE (months) between the arms to detect.")
@click.option("--from-study", "pilot_study", help="Take the pilot variance components from this study's reads.")
@click.option("--var-tr", type=float, help="Pilot σ²_TR (reader × condition variance).")
@click.option("--var-error", type=float, help="Pilot error variance Var.")
@click.option("--cov1", type=float)
@click.option("--cov2", type=float)
@click.option("--cov3", type=float)
@click.option("--pilot-cases", type=click.IntRange(2), help="Number of cases in the pilot.")
@click.option("--readers", "reader_range", default="3-15", show_default=True, help="Numbers of readers, MIN-MAX.")
@click.option("--power", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.8, show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True)
@click.option("--analysis", type=click.Choice(["RRRC", "FRRC", "RRFC"]), default="RRRC", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per number of readers.")
@DB_OPTION
def study_plan(effect, pilot_study, var_tr, var_error, cov1, cov2, cov3, pilot_cases, reader_range, power, alpha,
               analysis, as_json, db):
    """Readers × cases needed to detect an MAE difference (Hillis-Obuchowski power for ORH)."""
    from . import planning, readerstudy

    if pilot_study:
        comps = _guard(lambda: planning.pilot_from_reads(readerstudy.reads_table(_store(db), pilot_study)))
        comps.pop("observed_difference")
    else:
        given = dict(var_reader_condition=var_tr, var_error=var_error, cov1=cov1, cov2=cov2, cov3=cov3, pilot_cases=pilot_cases)
        if any(v is None for v in given.values()):
            click.echo("error: give --from-study, or all of --var-tr --var-error --cov1 --cov2 --cov3 --pilot-cases.", err=True)
            sys.exit(2)
        comps = given
    lo, _, hi = reader_range.partition("-")
    if not (lo.isdigit() and (hi or lo).isdigit()) or not 2 <= int(lo) <= int(hi or lo):
        click.echo(f"error: --readers must be MIN-MAX with MIN ≥ 2, got {reader_range!r}.", err=True)
        sys.exit(2)
    table = _guard(lambda: planning.plan_reader_study(effect, readers=range(int(lo), int(hi or lo) + 1), power=power,
                                                      alpha=alpha, analysis=analysis, **comps))
    click.echo(f"assumes: the pilot's variance components ({json.dumps({k: round(v, 6) for k, v in comps.items()})}) hold "
               f"for the new study, with error variance and covariances scaled by pilot cases / cases; {analysis} ORH "
               f"test of 2 arms at alpha {alpha}; target power {power}.", err=True)
    for r in table.to_dict("records"):
        cases = None if r["cases"] is None or r["cases"] != r["cases"] else int(r["cases"])
        click.echo(json.dumps({"readers": r["readers"], "cases": cases, "power": r["power"]}) if as_json
                   else f"{r['readers']} readers: {cases if cases else 'more than 5000'} cases (power {r['power']:.3f})")


@main.command("plan-cohort")
@click.option("--mae", type=float, required=True, help="Anticipated MAE of the model (months).")
@click.option("--mae-half-width", type=float, required=True, help="Wanted 95% CI half-width of the MAE (months).")
@click.option("--sd-error", type=float, required=True, help="Anticipated SD of model − reference (months).")
@click.option("--loa-half-width", type=float, required=True, help="Wanted CI half-width of each limit of agreement (months).")
@click.option("--sd-reference", type=float, required=True, help="SD of the reference bone ages in the cohort (months).")
@click.option("--bias-width", type=float, help="Wanted CI width of the bias (months; default 2 × MAE half-width).")
@click.option("--slope", type=float, default=1.0, show_default=True, help="Anticipated calibration slope.")
@click.option("--slope-width", type=float, default=0.2, show_default=True, help="Wanted CI width of the calibration slope.")
@click.option("--mmoe", type=float, default=1.1, show_default=True, help="Multiplicative margin of error of the residual variance.")
@click.option("--json", "as_json", is_flag=True)
def plan_cohort(mae, mae_half_width, sd_error, loa_half_width, sd_reference, bias_width, slope, slope_width, mmoe, as_json):
    """Cases a validation cohort needs: MAE and limits-of-agreement precision, Archer/Riley (2021) criteria."""
    from . import planning

    t = _guard(lambda: planning.plan_cohort(mae=mae, mae_half_width=mae_half_width, sd_error=sd_error,
                                            loa_half_width=loa_half_width, sd_reference=sd_reference, bias_width=bias_width,
                                            slope=slope, slope_width=slope_width, max_mmoe=mmoe))
    for r in t.to_dict("records"):
        click.echo(json.dumps(r) if as_json else f"{r['criterion']}: {r['n']} cases — {r['target']}; assumes {r['assumption']} "
                   f"({r['reference']})")
    if not as_json:
        click.echo(f"the cohort needs {int(t.n.max())} cases (the largest of these).")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Backup file to write (SQLite).")
@DB_OPTION
def backup(out, db):
    """Copy the whole study database consistently into a SQLite file, even while the app is in use (SQLite:
    online backup; PostgreSQL: one snapshot). Restore with `db copy --from BACKUP --to URL`."""
    n = _guard(lambda: _store(db, must_exist=True).backup(out))
    click.echo(f"backed up {n} tables to {out}")


@main.group()
def db():
    """The study database: SQLite file or PostgreSQL server (KNEEAGE_DATABASE_URL)."""


@db.command("copy")
@click.option("--from", "source", required=True, metavar="PATH|URL", help="The study database to copy.")
@click.option("--to", "target", required=True, metavar="PATH|URL", help="An empty database (created if it is a new SQLite file).")
def db_copy(source, target):
    """Move a study between SQLite and PostgreSQL: every table, in one snapshot of the source and one
    transaction on the target; the target must hold no study data."""
    from .store import copy_database

    src = _store(source, must_exist=True)
    dst = _store(target)
    counts = _guard(lambda: copy_database(src, dst))
    click.echo(f"copied {sum(counts.values())} rows from {src.label} to {dst.label}: "
               + ", ".join(f"{t} {n}" for t, n in counts.items()))
