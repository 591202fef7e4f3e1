"""The sidebar: every knob of RunConfig as a widget with a stable key, presets that
fill them, and the URL query string that mirrors them (shareable links)."""
from __future__ import annotations

import streamlit as st

from xray_core.config import ACTIVATIONS, RunConfig
from xray_core.errors import ConfigError
from xray_core.presets import PRESETS, get_preset

from .texts import HELP

CUSTOM = "(custom)"
KNOB_KEYS = ("arch", "activation", "alpha", "epochs", "batch_size", "lr", "optimizer", "batch_norm", "dropout",
             "filters", "cnn_mode", "l2", "seed", "limit_train", "data_source", "data_path", "preset")
DATA_CHOICES = ("phantom", "folder", "upload")
ACT_LABELS = {"relu": "ReLU", "leaky_relu": "LeakyReLU", "tanh": "tanh", "sigmoid": "sigmoid", "elu": "ELU"}


def _state_from_config(cfg: RunConfig) -> None:
    r = cfg.resolved()
    st.session_state.update({
        "arch": r.arch, "activation": r.activation, "alpha": float(r.alpha), "epochs": int(r.epochs),
        "batch_size": int(r.batch_size), "lr": float(r.lr), "optimizer": r.optimizer,
        "batch_norm": bool(r.batch_norm), "dropout": float(r.dropout),
        "filters": ",".join(str(f) for f in r.filters), "cnn_mode": r.cnn_mode, "l2": float(r.l2),
        "seed": int(r.seed), "limit_train": int(r.limit_train or 0),
    })
    if r.data not in ("phantom",) and not r.data.endswith(".zip"):
        st.session_state.update({"data_source": "folder", "data_path": r.data})


def init_state() -> None:
    """First run of a session: defaults, overridden by the URL's query string."""
    if st.session_state.get("_controls_ready"):
        return
    cfg = RunConfig()
    try:
        cfg = RunConfig.from_query(dict(st.query_params))
    except ConfigError as e:
        st.session_state["_link_error"] = f"The link's settings were ignored: {e}"
    st.session_state.setdefault("data_source", "phantom")
    st.session_state.setdefault("data_path", "")
    _state_from_config(cfg)
    st.session_state["preset"] = CUSTOM
    st.session_state["_controls_ready"] = True


def apply_preset() -> None:
    name = st.session_state.get("preset")
    if name and name != CUSTOM:
        seed = st.session_state.get("seed", 0)
        _state_from_config(get_preset(name).config.replace(seed=seed))
        st.session_state["preset"] = name


def _arch_defaults() -> None:
    """Switching FC/CNN or seed/corrected loads that architecture's own lr, L2 and dropout."""
    cfg = RunConfig(arch=st.session_state["arch"], cnn_mode=st.session_state["cnn_mode"]).resolved()
    st.session_state.update({"lr": cfg.lr, "l2": cfg.l2, "dropout": cfg.dropout})
    st.session_state["preset"] = CUSTOM


def _mark_custom() -> None:
    st.session_state["preset"] = CUSTOM


def _scale_filters(factor: float) -> None:
    try:
        f = [int(x) for x in st.session_state["filters"].split(",")]
        st.session_state["filters"] = ",".join(str(max(1, min(2048, round(v * factor)))) for v in f)
    except ValueError:
        pass
    _mark_custom()


def sidebar() -> tuple[RunConfig | None, str | None]:
    """Draw the controls; return (config, error message)."""
    init_state()
    # Streamlit forgets the state of widgets that were not drawn in a run (e.g. the CNN
    # filters while FC is chosen); re-assigning keeps every knob across switches.
    for k in KNOB_KEYS:
        if k in st.session_state:
            st.session_state[k] = st.session_state[k]
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
        path = sb.text_input("Folder on the server", key="data_path", placeholder="/path/to/jsrt_patches")
        source = path.strip() or None
        if not source:
            error = "Enter a folder path, or choose the built-in phantom."
    elif st.session_state["data_source"] == "upload":
        up = sb.file_uploader("Dataset .zip", type=["zip"], key="data_zip")
        if up is None:
            source, error = None, "Upload a .zip of the course layout or of class folders."
        else:
            from .session import uploaded_zip_path
            source = uploaded_zip_path(up.getvalue())

    sb.subheader("Model")
    sb.radio("Architecture", ["fc", "cnn"], key="arch", horizontal=True, on_change=_arch_defaults,
             format_func={"fc": "Fully connected", "cnn": "CNN"}.get, help=HELP["arch"])
    cnn = st.session_state["arch"] == "cnn"
    sb.selectbox("Activation", ACTIVATIONS, key="activation", format_func=ACT_LABELS.get,
                 help=HELP["activation"], on_change=_mark_custom)
    if st.session_state["activation"] == "leaky_relu":
        sb.slider("LeakyReLU α", 0.0, 0.99, step=0.01, key="alpha", help=HELP["alpha"], on_change=_mark_custom)
    if cnn:
        sb.radio("CNN mode", ["seed", "corrected"], key="cnn_mode", horizontal=True, on_change=_arch_defaults,
                 help=HELP["cnn_mode"])
        sb.text_input("Filters (five conv layers)", key="filters", help=HELP["filters"], on_change=_mark_custom)
        c1, c2 = sb.columns(2)
        c1.button("Halve", key="filters_halve", on_click=_scale_filters, args=(0.5,), width="stretch")
        c2.button("Double", key="filters_double", on_click=_scale_filters, args=(2.0,), width="stretch")
    else:
        sb.checkbox("Batch normalisation", key="batch_norm", help=HELP["batch_norm"], on_change=_mark_custom)
    sb.slider("Dropout", 0.0, 0.9, step=0.05, key="dropout", help=HELP["dropout"], on_change=_mark_custom)

    sb.subheader("Training")
    sb.number_input("Epochs", 1, 1000, step=1, key="epochs", help=HELP["epochs"], on_change=_mark_custom)
    sb.number_input("Batch size", 1, 65536, step=8, key="batch_size", help=HELP["batch_size"],
                    on_change=_mark_custom)
    sb.number_input("Learning rate", min_value=1e-7, max_value=10.0, step=1e-5, format="%.1e", key="lr",
                    help=HELP["lr"], on_change=_mark_custom)
    sb.selectbox("Optimizer", ["adam", "sgd"], key="optimizer", help=HELP["optimizer"], on_change=_mark_custom,
                 format_func={"adam": "Adam", "sgd": "SGD + momentum 0.9"}.get)
    sb.number_input("L2 weight decay", min_value=0.0, max_value=1.0, step=1e-4, format="%.1e", key="l2",
                    help=HELP["l2"], on_change=_mark_custom)
    sb.number_input("Random seed", 0, 2**31 - 1, step=1, key="seed", help=HELP["seed"])
    sb.number_input("Use N training patches (0 = all)", 0, 10_000_000, step=500, key="limit_train",
                    help=HELP["limit_train"])
    if source is None:
        return None, error
    try:
        return config_from_state(source), None
    except ConfigError as e:
        return None, str(e)


def config_from_state(source: str = "phantom") -> RunConfig:
    s = st.session_state
    from xray_core.config import parse_filters
    return RunConfig(
        arch=s["arch"], activation=s["activation"], alpha=float(s["alpha"]), epochs=int(s["epochs"]),
        batch_size=int(s["batch_size"]), lr=float(s["lr"]), optimizer=s["optimizer"],
        batch_norm=bool(s["batch_norm"]) and s["arch"] == "fc", dropout=float(s["dropout"]),
        filters=parse_filters(s["filters"]), cnn_mode=s["cnn_mode"], l2=float(s["l2"]), seed=int(s["seed"]),
        data=source, limit_train=int(s["limit_train"]) or None,
    ).validate()


def mirror_to_url(cfg: RunConfig) -> None:
    """Keep the address bar in step with the controls (uploaded zips are not shareable)."""
    q = cfg.to_query()
    if cfg.data.endswith(".zip"):
        q.pop("data", None)
    # resolved defaults equal to the architecture's own defaults need not be in the link
    base = RunConfig(arch=cfg.arch, cnn_mode=cfg.cnn_mode).resolved()
    for k in ("lr", "l2", "dropout"):
        if getattr(cfg, k) == getattr(base, k):
            q.pop(k, None)
    if "ws" in st.query_params:  # the workspace key (xray_ui.session.workspace) stays in the link
        q["ws"] = st.query_params["ws"]
    if dict(st.query_params) != q:
        st.query_params.from_dict(q)
