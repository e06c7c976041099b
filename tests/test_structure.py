"""The shape of the house, checked the way tinygrad checks its line count: imports only point down
the floors declared here, no import circles, at most 8 levels from the CLI to the ground floor,
functions that fit on a screen and files read in one sitting. A new module must be given a floor."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "convlens"

FLOORS = [
    # 0 ground: plain values in, plain values out; no other floor's imports
    ["errors", "names", "versions", "reading", "files", "idx", "images", "spec", "residual", "models", "summary",
     "plotting", "figures", "charts", "explain_figures", "baselines", "convolution", "spread"],
    # 1 engine: runs a model but never trains it (device, precision, the one /255, batched prediction)
    ["engine", "distributed"],
    # 2 data: dataset references, files found and read, loaders, the training config, runs and checkpoints
    ["registry", "dataref", "sources", "userdata", "folders", "kerasfile", "config", "datasets", "runs", "checkpoint"],
    # 3 work: training, evaluation, inspection, attribution, comparison, export
    ["augment", "resizing", "selection", "ema", "warmup", "schedule", "loop", "train", "tblog", "evaluate", "inspect",
     "attribution", "sanity", "faithfulness", "features", "compare", "export", "kerasimport", "probe"],
    # 4 views: what each verb shows, built once for the CLI, the report and the explorer
    ["views", "explanations", "feature_views", "progress"],
    # 5 faces: the command line, the report, the notebook, the web explorer, the benchmark
    ["cli", "cli_args", "report", "notebook", "server", "guards", "api", "explain_api", "explorer", "jobs", "bench",
     "bench_keras", "ladder", "watch_api"],
]
TOP = {"__init__", "__main__"}     # the public API and `python -m convlens`: nothing imports them
MAX_LEVELS, MAX_FUNCTION_LINES, MAX_FILE_LINES = 8, 60, 450
FLOOR = {m: i for i, floor in enumerate(FLOORS) for m in floor}


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules a file imports, at module level or inside functions (`from . import x` is x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            found |= {n if n in modules else "__init__" for n in names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "convlens":
            found.add((node.module.split(".") + ["__init__"])[1])
        elif isinstance(node, ast.Import):
            found |= {(a.name.split(".") + ["__init__"])[1] for a in node.names if a.name.split(".")[0] == "convlens"}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {m: _imports(PACKAGE / f"{m}.py", modules) - {m} for m in modules}


def test_every_module_has_a_floor(graph):
    assert set(graph) - TOP == set(FLOOR), "declare new modules in FLOORS; remove deleted ones"


def test_imports_point_down_and_nothing_imports_the_package_itself(graph):
    up = [(m, d) for m in FLOOR for d in graph[m] if d in TOP or FLOOR[d] > FLOOR[m]]
    assert up == [], f"imports that run up the floors: {up}"


def test_no_import_cycle(graph):
    state = {}

    def visit(m, path):
        if state.get(m) == "open":
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) != "done":
            state[m] = "open"
            for d in sorted(graph[m]):
                visit(d, path + [m])
            state[m] = "done"
    for m in sorted(graph):
        visit(m, [])


def test_at_most_eight_levels_from_the_cli_to_the_ground(graph):
    memo = {}

    def levels(m):                       # modules on the longest import chain from m down
        if m not in memo:
            memo[m] = 1 + max((levels(d) for d in graph[m]), default=0)
        return memo[m]
    assert levels("cli") <= MAX_LEVELS


def test_functions_fit_on_a_screen_and_files_in_one_sitting():
    long_functions, long_files = [], []
    for path in sorted(PACKAGE.glob("*.py")) + sorted((PACKAGE / "web").glob("*.js")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(path.name)
        if path.suffix == ".py":
            functions = [n for n in ast.walk(ast.parse(text)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            long_functions += [f"{path.stem}.{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in functions
                               if n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long_files == [] and long_functions == []
