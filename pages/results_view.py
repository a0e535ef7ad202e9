"""Rendering shared by the validation and pooling pages: results as in a paper (kneeage.paper), on screen."""

import streamlit as st

from kneeage import paper


def headline(summary: dict) -> None:
    """The first numbers, each with its 95% CI written under it (not only in a tooltip)."""
    items = paper.headline(summary)
    for col, item in zip(st.columns(len(items)), items):
        col.metric(item["label"], item["value"])
        if item["ci"]:
            col.caption(item["ci"])


def results(summary: dict, meta: dict) -> None:
    """Prose (MAE and bias with CIs, each comparison in a sentence, interval coverage) and the tables."""
    for text in paper.results_paragraphs(summary)[1:]:
        st.markdown(text)
    st.markdown("**Table 1. Agreement with the reference**")
    st.dataframe(paper.agreement_table(summary), hide_index=True, key="agreement")
    st.markdown("**Table 2. By sex and age band** (chronological age; the all-cases row is the headline above)")
    st.dataframe(paper.strata_table(summary), hide_index=True, key="strata")
    if len(table := paper.comparison_table(summary)):
        st.markdown("**Table 3. The model against chronological age and comparators** (difference in MAE, paired bootstrap)")
        st.dataframe(table, hide_index=True, key="comparisons")
    if len(table := paper.coverage_table(summary)):
        st.markdown("**Table 4. Interval coverage** against the site's reference reads, by band of the model's estimate")
        st.dataframe(table, hide_index=True, key="coverage")
    with st.expander("Methods (as in the exported report)"):
        st.write(paper.methods_paragraph(summary, meta))


def worst(summary: dict) -> None:
    st.dataframe(paper.worst_table(summary), hide_index=True, key="worst")


def downloads(exports: dict, meta: dict) -> None:
    """One button per export; each file is named with the site, the cohort and today's date."""
    for col, (fname, data) in zip(st.columns(len(exports)), exports.items()):
        col.download_button(f"Download {fname}", data, paper.export_name(meta, fname), key=f"dl_{fname}")
