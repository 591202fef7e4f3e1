"""xray_ui.install(): Streamlit's patches applied explicitly, once, version-checked; every
page calls it first (issue 22, item 4). The shutdown it registers is tested for real, against
a running server, in test_shutdown.py."""
import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest
import streamlit
from streamlit.testing.v1 import AppTest

import xray_ui

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "app.py"] + sorted((REPO / "pages").glob("*.py"))


def _fake_streamlit(runner: bool = True, config: bool = True):
    sr = types.SimpleNamespace(**({xray_ui.PATCHED: lambda: None} if runner else {}))
    cfg = types.SimpleNamespace(**({n: None for n in xray_ui.CONFIG_INTERNALS} if config else {}))
    return sr, cfg


def test_the_pinned_version_is_read_from_requirements_txt(tmp_path):
    assert xray_ui.pinned_streamlit() == streamlit.__version__   # this environment installs the pin
    req = tmp_path / "requirements.txt"
    req.write_text("tensorflow==2.21.0\nstreamlit == 9.1.2  # the UI\nplotly==7.1.0\n")
    assert xray_ui.pinned_streamlit(req) == "9.1.2"
    req.write_text("plotly==7.1.0\n")
    assert xray_ui.pinned_streamlit(req) is None
    assert xray_ui.pinned_streamlit(tmp_path / "missing.txt") is None


def test_another_version_starts_only_with_every_patched_internal_there():
    assert xray_ui.check_streamlit("1.67.0", "1.67.0", *_fake_streamlit()) is None
    assert xray_ui.check_streamlit("1.99.0", "1.67.0", *_fake_streamlit()) is None   # internals all there
    line = xray_ui.check_streamlit("1.99.0", "1.67.0", *_fake_streamlit(runner=False))
    assert line and "\n" not in line
    assert "streamlit 1.99.0" in line and f"script_runner.{xray_ui.PATCHED}" in line and "1.67.0" in line
    line = xray_ui.check_streamlit("1.99.0", "1.67.0", *_fake_streamlit(config=False))
    assert "config.get_option" in line and "config._config_options" in line and "config._config_lock" in line
    # the pin itself is no pass: a broken install is refused the same way
    assert xray_ui.check_streamlit("1.67.0", "1.67.0", *_fake_streamlit(runner=False))


def test_importing_the_package_patches_nothing_install_patches_once():
    code = """
import atexit, sys
import streamlit.config as config
from streamlit.runtime.scriptrunner import script_runner
import xray_ui
assert not getattr(config.get_option, "xray_unlocked", False), "patched on import"
assert script_runner._clean_problem_modules is not xray_ui._no_keras_reset, "patched on import"
n = atexit._ncallbacks()
xray_ui.install(); xray_ui.install()
assert config.get_option.xray_unlocked
assert script_runner._clean_problem_modules is xray_ui._no_keras_reset
assert atexit._ncallbacks() == n + 1, atexit._ncallbacks() - n   # one shutdown hook
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_without_a_page_a_refusal_raises_its_one_line():
    code = """
from streamlit.runtime.scriptrunner import script_runner
import xray_ui
del script_runner._clean_problem_modules
try:
    xray_ui.install()
except xray_ui.IncompatibleStreamlit as e:
    print("refused:", e)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("refused: X-ray Lab cannot start: streamlit ")
    assert out.stdout.count("\n") == 1 and "script_runner._clean_problem_modules" in out.stdout
    assert out.stderr.strip() == out.stdout[len("refused: "):].strip()    # said once in the server's log


def test_on_a_page_a_refusal_is_one_line_and_the_page_goes_no_further(monkeypatch):
    line = "X-ray Lab cannot start: streamlit 0.0 has no script_runner._clean_problem_modules, ..."
    monkeypatch.setattr(xray_ui, "_installed", False)
    monkeypatch.setattr(xray_ui, "check_streamlit", lambda *a, **k: line)
    monkeypatch.setattr(xray_ui._refuse, "said", True, raising=False)

    def page():
        import streamlit as st

        import xray_ui
        xray_ui.install()
        st.write("the page went on")

    at = AppTest.from_function(page, default_timeout=60).run()
    assert [e.value for e in at.error] == [line]
    assert not at.exception and not at.markdown
    assert xray_ui._installed is False          # the next run checks again


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_every_page_calls_install_before_it_imports_streamlit_or_the_app(path):
    body = ast.parse(path.read_text(encoding="utf-8")).body
    calls = [i for i, n in enumerate(body) if ast.unparse(n) == "xray_ui.install()"]
    assert len(calls) == 1, f"{path.name}: xray_ui.install() is not called at its top level once"

    def app_import(n) -> bool:
        names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
            [n.module or ""] if isinstance(n, ast.ImportFrom) else []
        return any(m.split(".")[0] in ("streamlit", "xray_core") or m.startswith("xray_ui.") or
                   (isinstance(n, ast.ImportFrom) and m == "xray_ui") for m in names)
    first = next(i for i, n in enumerate(body) if app_import(n))
    assert calls[0] < first, f"{path.name}: {ast.unparse(body[first])!r} comes before xray_ui.install()"
