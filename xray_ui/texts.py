"""Help texts that teach: what each control changes and what to expect.
Started from the reference course's own explanations."""
import re

from xray_core.config import KNOBS


# The knobs' help lives with the knobs (xray_core.config.KNOBS: one table for the
# widgets, the CLI and the links); only the controls that are not knobs are here.
HELP = {
    **{name: k.help for name, k in KNOBS.items() if k.help},
    "data_source": "Built-in phantom: synthetic chest films made on this server, no upload needed. "
                   "Folder: a path on the server in the course layout (train/ validation/ test/, files ending "
                   "_b/_c/_l/_h) or with one folder per class. Upload: a .zip of either layout.",
    "preset": "The reference course's seven experiments: picks every control for you and shows the "
              "course's reported figures next to yours.",
}


def plain(text: object) -> str:
    """Text from a link, a file name or an error, safe to pass to st.error/st.warning/...:
    those render Markdown, so every ASCII punctuation mark is backslash-escaped (CommonMark
    shows it literally) and a crafted link cannot become a clickable link, an image,
    a colour directive or maths. One line: newlines become spaces."""
    out = []
    for ch in " ".join(str(text).split()):
        out.append("\\" + ch if ch in _PUNCTUATION else ch)
    return "".join(out)


_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
LINK_ECHO_CHARS = 40      # a link's value is echoed at most this long
LINK_MESSAGE_CHARS = 300  # and a message about a link at most this long


def cut_link_values(message: object, values) -> str:
    """A message about a link's values, each value in it cut to LINK_ECHO_CHARS (a 100 KB
    value must not come back whole), and the message itself to LINK_MESSAGE_CHARS."""
    text = str(message)
    for v in sorted({str(v) for v in values if len(str(v)) > LINK_ECHO_CHARS}, key=len, reverse=True):
        text = text.replace(v, v[:LINK_ECHO_CHARS] + "…")
    # a value the message re-wrote (a parsed list, say): any long unbroken run is cut too
    text = re.sub(r"\S{%d,}" % (LINK_ECHO_CHARS + 1), lambda m: m.group()[:LINK_ECHO_CHARS] + "…", text)
    return text if len(text) <= LINK_MESSAGE_CHARS else text[:LINK_MESSAGE_CHARS - 1] + "…"

BN_AXIS_EXPLAINER = """
**What `BatchNormalization(axis=1)` does here.** Keras images are NHWC: (batch, height, width, channels).
`axis=1` is the *height* axis, so the layer learns one scale and one shift **per image row**
and averages over batch, width and channels — mixing every feature map together.
The intended normalisation is per **channel** (`axis=-1`): one scale/shift per filter.
You can read it in the parameter counts: 4 params per row ⇒ 128/64/64/32/32
(rows 32, 16, 16, 8, 8) instead of 4 per channel ⇒ 256/512/512/1024/1024.
Add lr 1e-5 under L2 1e-2 and the weights barely move: test accuracy stays near chance (25 %).
"""
