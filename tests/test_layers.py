"""The engine's shape is a contract: layers point one way, no module imports another in a
circle (lazy imports inside functions included), and only settings.py reads XRAY_LAB_*.
`.importlinter` names the layers; these tests fail the build when an arrow goes up."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on, stack, out, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is a dev requirement (requirements-dev.txt)"
    p = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout


def test_no_import_cycles_even_through_lazy_imports():
    import grimp
    sys.setrecursionlimit(10000)
    graph = grimp.build_graph("xray_core")
    assert len(graph.modules) > 40          # it did read the package
    # grimp reads every import statement, those inside functions too
    assert "xray_core.train.fit" in graph.find_modules_directly_imported_by("xray_core.train.job")
    assert "xray_core.models" in graph.find_modules_directly_imported_by("xray_core.train.fit")  # lazy one
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    class G:   # a -> b -> c -> a, d alone
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return self.edges.get(m, set())
    assert _cycles(G()) == [["a", "b", "c"]]


def test_only_settings_reads_xray_lab_variables():
    """A new XRAY_LAB_* variable is one row of settings.py, never another os.environ read."""
    readers = []
    for path in sorted((REPO / "xray_core").rglob("*.py")) + sorted((REPO / "xray_ui").rglob("*.py")) + [
            REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]:
        if path.name == "settings.py" and path.parent.name == "xray_core":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"XRAY_LAB_[A-Z_]+", node.value):
                parent_calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and node in ast.walk(n)]
                for call in parent_calls:
                    f = ast.unparse(call.func)
                    if f in ("os.environ.get", "os.getenv", "environ.get") or f.endswith("environ.__getitem__"):
                        readers.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value}")
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                key = ast.unparse(node.slice)
                if "XRAY_LAB_" in key:
                    readers.append(f"{path.relative_to(REPO)}:{node.lineno} {key}")
    assert readers == []


def test_every_setting_is_documented_and_parses():
    from xray_core import settings
    for s in settings.SETTINGS.values():
        assert s.name.startswith("XRAY_LAB_") and s.doc and s.kind in ("int", "float", "str", "path", "flag")


def test_a_bad_setting_falls_back_to_its_default(monkeypatch, caplog):
    from xray_core import settings
    monkeypatch.setenv("XRAY_LAB_MAX_QUEUE", "lots")
    assert settings.get("XRAY_LAB_MAX_QUEUE") == 60
    monkeypatch.setenv("XRAY_LAB_MAX_QUEUE", "7")
    assert settings.get("XRAY_LAB_MAX_QUEUE") == 7
    monkeypatch.setenv("XRAY_LAB_WORKER_NICE", "-5")       # below its minimum
    assert settings.get("XRAY_LAB_WORKER_NICE") == 10
    with pytest.raises(KeyError):
        settings.get("XRAY_LAB_NO_SUCH_THING")
