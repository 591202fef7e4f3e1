"""The sidebar's page links, named for students rather than by file name. Each link
carries the workspace key (`?ws=…`) so every page shows the same workspace's runs; the
teacher's pinned message shows under them, on every page."""
import streamlit as st

PAGES = (("app.py", "Train", ":material/model_training:"),
         ("pages/2_Classify.py", "Classify", ":material/radiology:"),
         ("pages/4_Experiments.py", "Experiments", ":material/science:"),
         ("pages/5_Inside.py", "Inside", ":material/neurology:"),
         ("pages/3_Report.py", "Report", ":material/description:"),
         ("pages/6_Class_board.py", "Class board", ":material/leaderboard:"))


def page_links() -> None:
    from .session import workspace
    ws = workspace()
    for page, label, icon in PAGES:
        st.sidebar.page_link(page, label=label, icon=icon, query_params={"ws": ws})
    st.sidebar.divider()
    from .lecture import pinned_message
    pinned_message()      # the teacher's pinned line, on every page (issue 25)
