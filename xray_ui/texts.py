"""Help texts that teach: what each control changes and what to expect.
Started from the reference course's own explanations."""
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

BN_AXIS_EXPLAINER = """
**What `BatchNormalization(axis=1)` does here.** Keras images are NHWC: (batch, height, width, channels).
`axis=1` is the *height* axis, so the layer learns one scale and one shift **per image row**
and averages over batch, width and channels — mixing every feature map together.
The intended normalisation is per **channel** (`axis=-1`): one scale/shift per filter.
You can read it in the parameter counts: 4 params per row ⇒ 128/64/64/32/32
(rows 32, 16, 16, 8, 8) instead of 4 per channel ⇒ 256/512/512/1024/1024.
Add lr 1e-5 under L2 1e-2 and the weights barely move: test accuracy stays near chance (25 %).
"""
