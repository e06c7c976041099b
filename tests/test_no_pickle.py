"""A static guard: no code path in convlens can unpickle anything (a pickle runs code when loaded)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "convlens"

# Modules that unpickle, and the calls that do it elsewhere.
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
FORBIDDEN_CALLS = {("torch", "load"), ("np", "load"), ("numpy", "load"), ("pd", "read_pickle"),
                   ("torch.serialization", "load"), ("torch.jit", "load")}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def offences(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{filename}:{node.lineno} import {a.name}" for a in node.names
                      if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{filename}:{node.lineno} from {node.module} import …")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            owner, _, attr = name.rpartition(".")
            if (owner, attr) in FORBIDDEN_CALLS:
                found.append(f"{filename}:{node.lineno} {name}(…)")
    return found


def test_the_guard_catches_what_it_should():
    sample = "import pickle\nfrom joblib import load\nimport torch\ntorch.load('x')\nnp.load('y', allow_pickle=True)\n"
    assert len(offences(sample, "sample.py")) == 4


def test_no_module_in_convlens_can_unpickle():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10
    found = [o for f in files for o in offences(f.read_text(), str(f.relative_to(SRC.parent)))]
    assert found == [], "pickle loading in convlens: " + "; ".join(found)
