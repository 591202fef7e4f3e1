"""The app's favicon, shipped with it: `st.set_page_config(page_icon=ICON)` serves it from this
server. A `:material/…:` icon would make every browser fetch it from fonts.gstatic.com
(Streamlit 1.67 builds that URL), which fails offline and tells Google who is in class."""
from pathlib import Path

ICON = str(Path(__file__).with_name("favicon.png"))
