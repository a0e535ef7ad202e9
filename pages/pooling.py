"""Pooling (study PI): import site bundles and see the pooled analysis. Bundles hold de-identified
per-case results only; no image ever leaves a site."""

import json

import pandas as pd
import streamlit as st

from kneeage import KneeageError, plots, validation
from pages.common import require_pi

st.title("Pool sites")
require_pi()
st.caption("Import the site_bundle.zip files that sites export from their validation page.")
files = st.file_uploader("Site bundles", type=["zip"], accept_multiple_files=True, key="bundles")
if not files:
    st.info("Add two or more site bundles to pool them.")
    st.stop()

bundles = []
for f in files:
    try:
        bundles.append(validation.read_bundle(f.getvalue(), f.name))
    except KneeageError as e:
        st.error(str(e))
try:
    result = validation.pool(bundles)
except KneeageError as e:
    st.error(str(e))
    st.stop()

if any(meta.get("synthetic_demo") for _, meta in bundles):
    st.error("At least one bundle comes from the synthetic demo model: the pooled numbers are a demonstration.")
if not result["same_model"]:
    st.warning("The bundles come from different model versions (hashes differ); pooling mixes models.")
p = result["pooled"]
m = st.columns(4)
m[0].metric("Sites", result["n_sites"])
m[1].metric("Cases", p["n"])
m[2].metric("Pooled MAE (months)", f"{p['mae']:.2f}", help="All cases together; BCa 95% CI {:.2f}–{:.2f}".format(*p["mae_ci"]))
m[3].metric("Pooled bias (months)", f"{p['bias']:+.2f}")
for what in ("mae", "bias"):
    st.plotly_chart(plots.pooling_figure(result, what), key=f"forest_{what}")
    het = result[f"{what}_heterogeneity"]
    if het:
        st.caption(f"{what.upper() if what == 'mae' else 'Bias'}: fixed effect {het['fixed']:.2f}, random effects "
                   f"{het['random']:.2f} ({het['random_ci'][0]:.2f} to {het['random_ci'][1]:.2f}); Cochran's Q "
                   f"{het['Q']:.2f} on {het['df']} df (p {het['Q_p']:.3g}), I² {het['I2']:.0%}, τ² {het['tau2']:.2f}.")
st.dataframe(pd.DataFrame(result["sites"]), hide_index=True, key="sites")
st.download_button("Download pooled.json", json.dumps(result, indent=2, default=float), "pooled.json", key="dl_pooled")
