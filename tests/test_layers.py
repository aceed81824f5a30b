"""The dependency rules of docs/architecture.md, read from the source with `ast`.

Every import counts, also one inside a function (a lazy import is still a dependency). A rule
names the importing side by module prefix and lists what it may import of ours (the top-level
packages robostack, controllers, sim, tasks, hardware); third-party imports are free except
where a rule says otherwise (torch in the data and env layers, engines in tasks).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("robostack", "controllers", "sim", "tasks", "hardware")
# The processes' entry modules: the operator commands start them, none imports another.
PROCESS_ENTRIES = ("robostack.robot.server", "robostack.training.learner", "robostack.training.actor",
                   "robostack.training.launcher", "robostack.training.train")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_imports() -> dict[str, set[str]]:
    """module -> every module it imports (absolute names; `from a import b` counts a and a.b)."""
    found: dict[str, set[str]] = {}
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            imported: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    assert node.level == 0, f"{path}: relative import; write it absolute"
                    imported.add(node.module)
                    imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            found[name] = imported
    return found


IMPORTS = all_imports()
MODULES = set(IMPORTS)


def ours(imported: set[str]) -> set[str]:
    """The imported names that are modules of ours (drops `from x import function`, and the bare
    top-level packages: `from robostack import transport` depends on transport, not on all)."""
    return {m for m in imported if m.split(".")[0] in OURS and m in MODULES and m not in OURS}


def within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(importers, allowed, forbidden_third_party=()) -> list[str]:
    bad = []
    for module, imported in sorted(IMPORTS.items()):
        if not within(module, importers):
            continue
        for target in sorted(ours(imported)):
            if not within(target, allowed) and not within(target, importers):
                bad.append(f"{module} imports {target}")
        for target in sorted(imported):
            if within(target, forbidden_third_party):
                bad.append(f"{module} imports {target}")
    return bad


RULES = {
    "1. controllers imports nothing of ours":
        (["controllers"], []),
    "2. sim imports controllers only, never hardware":
        (["sim"], ["controllers"]),
    "2. hardware imports controllers only, never sim":
        (["hardware"], ["controllers"]),
    "3. tasks imports sim.scene and controllers only, never an engine":
        (["tasks"], ["controllers", "sim.scene"], ["mujoco", "pybullet"]),
    "4. the wire, files, config and child processes import nothing of ours":
        (["robostack.transport", "robostack.files", "robostack.config", "robostack.processes"], []),
    "6. rl imports torch, numpy and files only":
        (["robostack.rl"], ["robostack.files"]),
    "6. data never imports torch, rl or a process":
        (["robostack.data"], ["robostack.files", "robostack.config"], ["torch"]),
    "6. env never imports rl or training":
        (["robostack.env"], ["controllers", "tasks", "hardware.teleop", "hardware.cameras.base",
                             "robostack.cameras", "robostack.robot",
                             "robostack.transport", "robostack.config", "robostack.files",
                             "robostack.cpu_affinity", "robostack.processes"], ["torch"]),
    "5. robot reaches sim and hardware only through robot.backends":
        (["robostack.robot"], ["controllers", "tasks", "robostack.transport", "robostack.config",
                               "robostack.files", "robostack.cpu_affinity", "robostack.processes"]),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_dependency_rule(rule):
    importers, allowed, *third_party = RULES[rule]
    if rule.startswith("5."):
        # The factory is the one place that names concrete backends.
        IMPORTS_WITHOUT_FACTORY = {m: i for m, i in IMPORTS.items() if m != "robostack.robot.backends"}
        bad = [v for v in violations(importers, allowed) if v.split()[0] in IMPORTS_WITHOUT_FACTORY]
    else:
        bad = violations(importers, allowed, *third_party)
    assert not bad, f"rule {rule} is broken:\n  " + "\n  ".join(bad)


def test_the_backend_factory_imports_backends_lazily():
    path = ROOT / "robostack" / "robot" / "backends.py"
    top_level = {n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
                 for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))}
    eager = sorted(m for m in top_level if m and m.split(".")[0] in ("sim", "hardware"))
    assert not eager, f"robostack/robot/backends.py imports {eager} at module level: import inside the factory"


def test_nothing_imports_commands():
    bad = [f"{m} imports {t}" for m, imported in IMPORTS.items() if not within(m, ["robostack.commands",
                                                                                  "robostack.cli"])
           for t in ours(imported) if within(t, ["robostack.commands"])]
    assert not bad, "\n".join(bad)


def test_no_process_imports_another_process_entry():
    bad = [f"{m} imports {t}" for m, imported in IMPORTS.items()
           if not within(m, ["robostack.commands", "robostack.cli"])
           for t in ours(imported) if t in PROCESS_ENTRIES and t != m
           and not (m == "robostack.env.env" and t == "robostack.robot.server")]  # in-process server
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph = {m: {t for t in ours(i) if t != m} for m, i in IMPORTS.items()}
    # a package's __init__ re-exporting its own modules is not a cycle between layers
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_modules_stay_readable():
    """No module in robostack/ over ~450 lines unless its docstring says why it is one thing."""
    long = []
    for path in sorted((ROOT / "robostack").rglob("*.py")):
        text = path.read_text()
        lines = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > 460 and "One thing:" not in doc:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, "split these, or say in the docstring ('One thing: ...') why not:\n" + "\n".join(long)
