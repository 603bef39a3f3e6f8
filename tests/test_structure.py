"""The design rules, read off the source: three rooms that meet only at the contracts, no import cycle.

- No module under samplers/ imports from operators/ or priors/ (samplers see `protocols` only).
- Outside operators/ no module names an operator class or an operator's registered name (the
  classical baselines may: each is defined for one operator family).
- The modules of the package import each other without a cycle (imports inside functions count).
"""
from __future__ import annotations

import ast
from pathlib import Path

import spgd
from spgd.operators import _FACTORIES, operator_names

PACKAGE = Path(spgd.__file__).parent
OPERATOR_CLASSES = {factory().__name__ for factory in _FACTORIES.values()}


def modules() -> dict[str, ast.Module]:
    """{dotted module name: its syntax tree} of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text(), filename=str(path))
    return out


MODULES = modules()


def imported(name: str, tree: ast.Module) -> set[str]:
    """The package modules `name` imports anywhere in its body: `from X import y` counts as X.y where
    that is a module, else as X."""
    is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
    base = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module in MODULES}


def test_samplers_import_neither_operators_nor_priors():
    for name, tree in MODULES.items():
        if name.startswith("spgd.samplers"):
            bad = {t for t in imported(name, tree) if t.startswith(("spgd.operators", "spgd.priors"))}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_only_operators_name_operator_classes_or_names():
    assert {"SuperResolution", "Inpainting", "PhaseRetrieval", "NonlinearBlur"} <= OPERATOR_CLASSES
    names = set(operator_names())
    for name, tree in MODULES.items():
        if name.startswith("spgd.operators") or name == "spgd.baselines":
            continue
        for node in ast.walk(tree):
            named = node.id if isinstance(node, ast.Name) else node.name if isinstance(node, ast.alias) else None
            if named in OPERATOR_CLASSES:
                raise AssertionError(f"{name} names the operator class {named} (line {getattr(node, 'lineno', '?')})")
            if isinstance(node, ast.Constant) and node.value in names:
                raise AssertionError(f"{name} names the operator {node.value!r} (line {node.lineno})")


def test_no_import_cycle():
    """Depth-first search for a back edge; a package importing its own submodules is not one."""
    graph = {name: imported(name, tree) - {name} for name, tree in MODULES.items()}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):  # a submodule importing a sibling through its package
                continue
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


APPS = ("spgd.cli", "spgd.web", "spgd.bench", "spgd.restore_job", "spgd.run", "spgd.plan", "spgd.api")
KIND_NAMES = {"TRAINED", "DiffIRModel", "model_kind", "kind_of", "PosteriorRestorer"}


def test_apps_hold_a_restorer_and_never_ask_which_kind():
    """The command line, the page, bench and the run layer reach models through `spgd.methods` and the
    `Restorer` contract: none imports a trained restorer's module (but for the training commands) or names
    a kind."""
    for name, tree in MODULES.items():
        if not name.startswith(APPS):
            continue
        bad = {t for t in imported(name, tree) if t.startswith(("spgd.diffir", "spgd.restorers"))} - {"spgd.diffir.cli"}
        assert not bad, f"{name} imports {sorted(bad)}"
        for node in ast.walk(tree):
            named = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            assert named not in KIND_NAMES, f"{name} names {named} (line {node.lineno})"


def test_no_module_is_longer_than_450_lines():
    long = {path.name: n for path in PACKAGE.rglob("*.py") if (n := len(path.read_text().splitlines())) > 450}
    assert not long, long
