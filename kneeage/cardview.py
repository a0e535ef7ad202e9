"""A model card as a reader reads it: what the model is, what it was trained on, what it takes in, how
well it did by age band, what it is for, and, for the synthetic demo, that it is not a clinical model.

:func:`card_sections` gives (heading, markdown) pairs that the single-case page renders and
:func:`card_html` the same as HTML for reports. The raw JSON stays in the model directory."""

from __future__ import annotations

import html

from .model import ModelCard
from .units import range_text

SYNTHETIC_STATEMENT = ("Synthetic demo: trained only on computer-generated phantom radiographs. Its numbers show how "
                       "kneeage works; they are not a clinical bone age and say nothing about real children.")
INTENDED_USE = ("Decision support for a radiologist or clinician estimating the bone age of a child (0-18 years) from "
                "an AP knee radiograph, with the image, the interval and the flags in view. Not for use on its own, not "
                "for adults, and only after the site has validated it on its own patients (External validation page).")


LABELS = {"pseudo_bone_age_months": "pseudo-labels, a hand bone-age model's estimate from each knee's paired hand film",
          "reference_bone_age_months": "reference reads (bone age read on the hand film)",
          "true_bone_age_months": "the phantoms' true bone age"}


def _m(v, digits=1) -> str:
    return "—" if v is None else f"{float(v):.{digits}f}"


def _band_table(rows: list[dict]) -> str:
    lines = ["| age band | n | MAE (mo) | chronological-age MAE (mo) |", "|---|---:|---:|---:|"]
    lines += [f"| {r.get('band', '')} | {r.get('n', '')} | {_m(r.get('mae'))} | {_m(r.get('chron_age_mae'))} |"
              for r in rows]
    return "\n".join(lines)


def card_sections(card: ModelCard, model_hash: str = "") -> list[tuple[str, str]]:
    """(heading, markdown) sections of a model card."""
    cfg, imp = card.config, card.imported or {}
    out: list[tuple[str, str]] = []
    if card.synthetic_demo:
        out.append(("Synthetic demo", SYNTHETIC_STATEMENT))
    what = [f"**{card.name}**" + (f" · hash `{model_hash}`" if model_hash else "")]
    if imp:
        what.append(f"An imported {imp.get('format', '').upper()} file ({imp.get('original_file', imp.get('file', ''))}, "
                    f"sha256 {str(imp.get('sha256', ''))[:16]}…) run as its card describes.")
    else:
        what.append(f"A {card.folds}-fold ensemble of ConvNeXt networks ({cfg.arch}); each fold reads the image and its "
                    "mirror image, and the estimate is the mean. Output: a hand-equivalent (Greulich-Pyle) bone age in months.")
    if card.code_version or card.date:
        what.append(f"Built with {card.code_version or 'kneeage'} on {card.date[:10] or 'an unrecorded date'}.")
    out.append(("What it is", what[0] + "\n\n" + " ".join(what[1:])))
    trained = []
    if card.training_data:
        trained.append(f"{card.training_data}.".replace("..", "."))
    if card.label_source:
        trained.append(f"Labels: {LABELS.get(card.label_source, card.label_source.replace('_', ' '))}.")
    lo, hi = card.label_range_months
    trained.append(f"Trained bone ages {range_text(lo, hi)}; estimates are kept inside this range.")
    out.append(("Trained on", " ".join(trained)))
    inputs = [f"One {cfg.body_part} radiograph"]
    if cfg.spacing_mm:
        inputs.append(f"framed as a {cfg.input_size * cfg.spacing_mm:.0f} mm window at {cfg.spacing_mm:g} mm per pixel "
                      f"({cfg.input_size}×{cfg.input_size} px) around the knee"
                      + (" that a learned localiser finds" if card.localiser else ""))
    else:
        inputs.append(f"resized to {cfg.input_size}×{cfg.input_size} px")
    side = {"sex": "the patient's sex", "chronological_age": "the chronological age"}
    inputs_text = ", ".join(inputs) + "; " + (" and ".join(side[s] for s in cfg.side_inputs) or "no other input") + "."
    out.append(("Inputs", inputs_text + (f" Intensities: {card.normalisation}." if card.normalisation and not imp else "")))
    metrics = []
    iv = card.interval or {}
    if iv:
        cov = iv.get("oof_coverage")
        metrics.append(f"{iv.get('level', 0.95):.0%} interval: {iv.get('method', 'calibrated')}"
                       + (f", against {iv['calibrated_against']}" if iv.get("calibrated_against") else "")
                       + (f"; it held {cov:.0%} of them" if cov is not None else "")
                       + ". Where the folds disagree more, it widens to hold every fold's estimate.")
    if card.output_calibration:
        metrics.append(f"Output calibrated to the training cohort's reference reads: {card.output_calibration['method']}.")
    res = card.results or {}
    if res.get("oof_mae") is not None:
        metrics.append(f"Cross-validation (out-of-fold, {res.get('n', '?')} images): MAE {_m(res['oof_mae'])} mo, "
                       f"bias {_m(res.get('oof_bias'))} mo against the training labels.")
    for name, t in (res.get("test_cohorts") or {}).items():
        bits = [f"**Test: {name}** (n = {t.get('n', '?')})"]
        if t.get("mae_vs_reference") is not None:
            bits.append(f"MAE {_m(t['mae_vs_reference'])} mo against reference reads (chronological age: "
                        f"{_m(t.get('chron_age_mae_vs_reference'))} mo)")
        if t.get("mae_vs_true") is not None:
            bits.append(f"{_m(t['mae_vs_true'])} mo against the true bone age (chronological age: "
                        f"{_m(t.get('chron_age_mae_vs_true'))} mo)")
        if t.get("interval_coverage_vs_reference") is not None:
            bits.append(f"interval coverage {t['interval_coverage_vs_reference']:.0%}")
        metrics.append("; ".join(bits) + ".")
        if t.get("by_true_bone_age"):
            metrics.append("By band of true bone age:\n\n" + _band_table(t["by_true_bone_age"]))
    sal = res.get("saliency_on_physes")
    if sal:
        share = sal["methods"][sal["default"]]["share_on_physes_5mm"][0]
        metrics.append(f"Saliency shown by default: {sal['default']} ({share:.0%} of its mass within 5 mm of a physis on "
                       f"{sal['n']} phantom knees, against {sal['uniform_share_5mm'][0]:.0%} for a uniform map; docs/saliency.md).")
    out.append(("Metrics", "\n\n".join(metrics) or "The card records no metrics."))
    out.append(("Intended use", INTENDED_USE))
    if card.notes:
        out.append(("Notes", card.notes))
    return out


def card_html(card: ModelCard, model_hash: str = "") -> str:
    """The same sections as HTML (paragraphs; the band table as a table)."""
    parts = []
    for head, text in card_sections(card, model_hash):
        body = []
        for block in text.split("\n\n"):
            if block.startswith("| "):
                rows = [r.strip("|").split("|") for r in block.splitlines() if not r.startswith("|---")]
                body.append("<table>" + "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>"
                                                for r in rows) + "</table>")
            else:
                t = html.escape(block).replace("**", "")
                body.append(f"<p>{t.replace('`', '')}</p>")
        parts.append(f"<h3>{html.escape(head)}</h3>{''.join(body)}")
    return "".join(parts)
