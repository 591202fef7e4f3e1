"""Streamlit views over xray_core. charts.py is pure plotly; session.py and
controls.py hold the per-browser-session state and the sidebar."""
