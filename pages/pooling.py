"""Pooling (study PI): import site bundles and see the pooled analysis. Bundles hold de-identified
per-case results only; no image ever leaves a site."""

import json

import streamlit as st

from kneeage import KneeageError, paper, plots, validation
from pages.common import require_pi

st.title("Pool sites")
require_pi()
st.caption("Import the site_bundle.zip files that sites export from their validation page.")
files = st.file_uploader("Site bundles", type=["zip"], accept_multiple_files=True, key="bundles")
if not files:
    st.info("Add two or more site bundles to pool them.")
    st.stop()
if len(files) == 1:
    st.error(f"Only one bundle ({files[0].name}): pooling needs the bundles of at least two sites, because it estimates how "
             "much sites differ. Add the other sites' site_bundle.zip files.")
    st.stop()

bundles = []
for f in files:
    try:
        bundles.append(validation.read_bundle(f.getvalue(), f.name))
    except KneeageError as e:
        st.error(str(e))
try:
    result = validation.pool(bundles).as_dict()  # the page shows pooled.json as exported
except KneeageError as e:
    st.error(str(e))
    st.stop()

if any(meta.get("synthetic_demo") for _, meta in bundles):
    st.error("At least one bundle comes from the synthetic demo model: the pooled numbers are a demonstration.")
if not result["same_model"]:
    st.warning("The bundles come from different model versions (hashes differ); pooling mixes models.")
h = paper.pooled_headline(result)  # the random-effects estimate is the forest plot's diamond below
m = st.columns(4)
m[0].metric("Sites", result["n_sites"])
m[1].metric("Cases", h["n"])
if h["random_effects"] is not None:
    m[2].metric("Pooled MAE (months, random effects)", paper.num(h["random_effects"], 2))
    m[2].caption(f"95% CI {paper.ci(h['random_effects_ci'], 2)}; the diamond in the forest plot")
m[3].metric("All cases together: MAE (months)", paper.num(h["all_cases"], 2))
m[3].caption(f"95% CI {paper.ci(h['all_cases_ci'], 2)} (BCa)")
for text in paper.pooled_sentences(result):
    st.markdown(text)
figs = {f"{what}_by_site": plots.pooling_figure(result, what) for what in ("mae", "bias")}
for key, fig in figs.items():
    st.plotly_chart(fig, key=f"forest_{key.split('_')[0]}")
st.dataframe(paper.sites_table(result), hide_index=True, key="sites")
demo = any(meta.get("synthetic_demo") for _, meta in bundles)
name = paper.export_name({"site": "pooled", "cohort": f"{result['n_sites']} sites"}, "")
d1, d2 = st.columns(2)
d1.download_button("Download pooled report (HTML)", paper.pooled_html(result, figs, demo), name + "report.html", key="dl_pooled_html")
d2.download_button("Download pooled.json", json.dumps(result, indent=2, default=float), name + "pooled.json", key="dl_pooled")
