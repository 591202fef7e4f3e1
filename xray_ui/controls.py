"""The sidebar: every knob of RunConfig as a widget with a stable key, presets that
fill them, and the URL query string that mirrors them (shareable links)."""
from __future__ import annotations

import streamlit as st

from xray_core.config import KNOBS, RunConfig, applies, arch_defaults, bounds, parse_filters
from xray_core.errors import ConfigError
from xray_core.presets import PRESETS, get_preset, matching_preset

from .texts import HELP, cut_link_values

CUSTOM = "(custom)"
# Every knob with a widget, from the knob table (xray_core.config.KNOBS), plus the data and preset keys.
WIDGET_KNOBS = tuple(name for name, k in KNOBS.items() if k.widget)
KNOB_KEYS = (*WIDGET_KNOBS, "data_source", "data_path", "preset")
DATA_CHOICES = ("phantom", "folder", "upload")


def _to_widget(name: str, value):
    """A config value as its widget holds it (filters as text, None as the widget's 'off')."""
    k = KNOBS[name]
    if value is None:
        return k.off
    if k.kind is tuple:
        return ",".join(str(f) for f in value)
    return k.kind(value)


def _from_widget(name: str, value):
    k = KNOBS[name]
    if k.off is not None and value == k.off:
        return None
    if k.kind is tuple:
        return parse_filters(value)
    return k.kind(value)


def _state_from_config(cfg: RunConfig) -> None:
    r = cfg.resolved()
    st.session_state.update({name: _to_widget(name, getattr(r, name)) for name in WIDGET_KNOBS})
    if r.data not in ("phantom",) and not r.data.endswith(".zip"):
        st.session_state.update({"data_source": "folder", "data_path": r.data})


def fill(cfg: RunConfig, *, data: bool = False) -> None:
    """Set the sidebar's knobs to `cfg` (the teacher's "Try this", a class experiment's turn).
    From a button's on_click, before the widgets are drawn; `data`: the data source too (a
    class experiment's runs must train on the same data to be compared)."""
    _state_from_config(cfg)
    if data and cfg.data == "phantom":
        st.session_state["data_source"] = "phantom"


def _state_preset() -> str:
    """The preset the controls equal (seed, data and patch limit aside), else (custom)."""
    try:
        p = matching_preset(config_from_state())
    except (ConfigError, KeyError, ValueError, TypeError):
        return CUSTOM
    return p.name if p else CUSTOM


def init_state() -> None:
    """First run of a session: defaults, overridden by the URL's query string."""
    if st.session_state.get("_controls_ready"):
        return
    cfg = RunConfig()
    query = dict(st.query_params)
    try:
        cfg = RunConfig.from_query(query)
    except ConfigError as e:   # the values it names are cut: a 100 KB link is not echoed back whole
        st.session_state["_link_error"] = f"The link's settings were ignored: {cut_link_values(e, query.values())}"
    st.session_state.setdefault("data_source", "phantom")
    st.session_state.setdefault("data_path", "")
    _state_from_config(cfg)
    st.session_state["_controls_ready"] = True


def apply_preset() -> None:
    name = st.session_state.get("preset")
    if name and name != CUSTOM:
        seed = st.session_state.get("seed", 0)
        _state_from_config(get_preset(name).config.replace(seed=seed))


def _arch_defaults() -> None:
    """Switching FC/CNN or seed/corrected loads that architecture's own lr, L2 and dropout."""
    defaults = arch_defaults(st.session_state["arch"], st.session_state["cnn_mode"])
    st.session_state.update({name: _to_widget(name, v) for name, v in defaults.items()})


def _scale_filters(factor: float) -> None:
    k = KNOBS["filters"]
    try:
        f = [int(x) for x in st.session_state["filters"].split(",")]
        st.session_state["filters"] = ",".join(str(max(k.min, min(k.max, round(v * factor)))) for v in f)
    except ValueError:
        pass


def _knob_widget(sb, name: str) -> None:
    """One knob's widget, made from its row of the table."""
    k = KNOBS[name]
    kw = dict(key=name, help=HELP.get(name), on_change=_arch_defaults if k.picks_defaults else None)
    if k.widget in ("radio", "select"):
        draw = sb.radio if k.widget == "radio" else sb.selectbox
        extra = dict(horizontal=True) if k.widget == "radio" else {}
        draw(k.label, k.choices, format_func=lambda c: k.choice_labels.get(c, c), **extra, **kw)
    elif k.widget == "checkbox":
        sb.checkbox(k.label, **kw)
    elif k.widget == "text":
        sb.text_input(k.label, **kw)
    else:
        lo, hi = bounds(name)
        if k.off is not None:
            lo = k.off
        if k.cap:
            # over this server's cap (a link or preset): show it; validation says why it is refused
            hi = max(hi, st.session_state.get(name, hi))
        cast = k.kind
        draw = sb.slider if k.widget == "slider" else sb.number_input
        draw(k.label, cast(lo), cast(hi), step=cast(k.step), format=k.format, **kw)


def sidebar() -> tuple[RunConfig | None, str | None]:
    """Draw the controls; return (config, error message)."""
    init_state()
    # Streamlit forgets the state of widgets that were not drawn in a run (e.g. the CNN
    # filters while FC is chosen); re-assigning keeps every knob across switches.
    for k in KNOB_KEYS:
        if k in st.session_state:
            st.session_state[k] = st.session_state[k]
    st.session_state["preset"] = _state_preset()  # a config equal to a preset shows its name
    sb = st.sidebar
    sb.header("Experiment")
    sb.selectbox("Course preset", [CUSTOM, *PRESETS], key="preset", on_change=apply_preset,
                 format_func=lambda n: n if n == CUSTOM else f"{n} · {PRESETS[n].title.split(': ', 1)[-1]}",
                 help=HELP["preset"])

    sb.subheader("Data")
    sb.radio("Data source", DATA_CHOICES, key="data_source", horizontal=True, help=HELP["data_source"],
             format_func={"phantom": "Built-in phantom", "folder": "Folder", "upload": "Upload .zip"}.get)
    source, error = "phantom", None
    if st.session_state["data_source"] == "folder":
        from .data_source import folder_picker
        source, error = folder_picker(sb)
    elif st.session_state["data_source"] == "upload":
        up = sb.file_uploader("Dataset .zip", type=["zip"], key="data_zip")
        if up is None:
            source, error = None, "Upload a .zip of the course layout or of class folders."
        else:
            from .session import uploaded_zip_path
            source = uploaded_zip_path(up.getvalue())

    for section, title in (("model", "Model"), ("training", "Training")):
        sb.subheader(title)
        for name in WIDGET_KNOBS:
            if KNOBS[name].section == section and applies(name, st.session_state):
                _knob_widget(sb, name)
                if name == "filters":
                    c1, c2 = sb.columns(2)
                    c1.button("Halve", key="filters_halve", on_click=_scale_filters, args=(0.5,), width="stretch")
                    c2.button("Double", key="filters_double", on_click=_scale_filters, args=(2.0,),
                              width="stretch")
    if source is None:
        return None, error
    try:
        return config_from_state(source), None
    except ConfigError as e:
        return None, str(e)


def config_from_state(source: str = "phantom") -> RunConfig:
    """The controls as a RunConfig; knobs that do not apply (alpha without LeakyReLU,
    batch norm on the CNN, ...) keep their defaults so equal runs compare equal."""
    s, base = st.session_state, RunConfig()
    values = {name: _from_widget(name, s[name]) for name in WIDGET_KNOBS}
    values = {name: (v if applies(name, values) else getattr(base, name)) for name, v in values.items()}
    return RunConfig(**values, data=source).validate()


def mirror_to_url(cfg: RunConfig) -> None:
    """Keep the address bar in step with the controls (uploaded zips are not shareable)."""
    q = cfg.to_query()
    if cfg.data.endswith(".zip"):
        q.pop("data", None)
    elif cfg.data != "phantom":  # a folder is linked by its dataset name, never its server path
        from .data_source import link_name
        q.pop("data", None)
        if name := link_name(cfg.data):
            q["data"] = name
    # resolved defaults equal to the architecture's own defaults need not be in the link
    for k, v in arch_defaults(cfg.arch, cfg.cnn_mode).items():
        if getattr(cfg, k) == v:
            q.pop(k, None)
    if "ws" in st.query_params:  # the workspace key (xray_ui.session.workspace) stays in the link
        q["ws"] = st.query_params["ws"]
    if dict(st.query_params) != q:
        st.query_params.from_dict(q)
