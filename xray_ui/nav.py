"""The sidebar's page links, named for students rather than by file name."""
import streamlit as st


def page_links() -> None:
    st.sidebar.page_link("app.py", label="Train", icon=":material/model_training:")
    st.sidebar.page_link("pages/2_Classify.py", label="Classify", icon=":material/radiology:")
    st.sidebar.page_link("pages/4_Experiments.py", label="Experiments", icon=":material/science:")
    st.sidebar.page_link("pages/5_Inside.py", label="Inside", icon=":material/neurology:")
    st.sidebar.divider()
