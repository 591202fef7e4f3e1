"""The sidebar's page links, named for students rather than by file name. Each link
carries the workspace key (`?ws=…`) so every page shows the same workspace's runs (signed in,
none: the account's workspace needs no key); Sign in / Sign out where the school's sign-in is
configured; the teacher's pinned message shows under them, on every page."""
import streamlit as st

PAGES = (("app.py", "Train", ":material/model_training:"),
         ("pages/2_Classify.py", "Classify", ":material/radiology:"),
         ("pages/4_Experiments.py", "Experiments", ":material/science:"),
         ("pages/5_Inside.py", "Inside", ":material/neurology:"),
         ("pages/3_Report.py", "Report", ":material/description:"),
         ("pages/6_Class_board.py", "Class board", ":material/leaderboard:"))


def page_links() -> None:
    from .accounts import sign_in_out
    from .session import account_bound, workspace
    ws = workspace()
    # signed in, the account finds the workspace: a key in the link would only leak it
    query = {} if account_bound() else {"ws": ws}
    for page, label, icon in PAGES:
        st.sidebar.page_link(page, label=label, icon=icon, query_params=query)
    sign_in_out()         # only where the school's sign-in is configured (xray_ui/accounts.py)
    st.sidebar.divider()
    from .lecture import pinned_message
    pinned_message()      # the teacher's pinned line, on every page (issue 25)
