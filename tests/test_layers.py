"""The package's layers (shared design: facts, schemas, parts, a run, entry points): a module imports from its own
layer or those below, our own modules at the top of a file, and no import circle. Read from the source's AST."""

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reg_runner"

# the layer of each module, by its dotted name's longest listed prefix (a group package's face is a schema; the
# modules inside it are parts)
LAYERS = {
    "reg_runner": 0, "reg_runner.errors": 0, "reg_runner.keys": 0, "reg_runner.atomic": 0, "reg_runner.signals": 0,
    "reg_runner.seeding": 0, "reg_runner.device": 0, "reg_runner.dotted": 0, "reg_runner.private": 0,
    "reg_runner.kinds": 0, "reg_runner.figures": 0,
    "reg_runner.schema": 1, "reg_runner.config": 1, "reg_runner.overrides": 1,
    **{f"reg_runner.{group}": 1 for group in ("data", "model", "reg", "optimizer", "scheduler", "augmentation",
                                              "trainer", "logging")},
    **{f"reg_runner.{group}.": 2 for group in ("data", "model", "reg", "optimizer", "scheduler", "augmentation",
                                               "trainer", "logging")},
    "reg_runner.records": 2, "reg_runner.fingerprint": 2,
    "reg_runner.checks": 3, "reg_runner.assembly": 3, "reg_runner.run": 3, "reg_runner.exactness": 3,
    "reg_runner.cli": 4, "reg_runner.sweep": 4, "reg_runner.resume": 4,
    "reg_runner.lr_find": 4, "reg_runner.landscape": 4, "reg_runner.report": 4, "reg_runner.docs": 4,
    "reg_runner.__main__": 4, "reg_runner.data.__main__": 4, "reg_runner.fork_server": 4,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    best = max((k for k in LAYERS if module.startswith(k) if k.endswith(".")
                or module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


def own_target(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@functools.cache
def imports() -> list[tuple[str, str, bool, int]]:
    """(importer, imported module of ours, inside a function, line) for every import of reg_runner's modules."""
    out = []
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]

        def visit(node, inside):
            for child in ast.iter_child_nodes(node):
                nested = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        anchor = package
                        for _ in range(child.level - 1):
                            anchor = anchor.rpartition(".")[0]
                        base = f"{anchor}.{base}".rstrip(".")
                    names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
                else:
                    visit(child, nested)
                    continue
                for name in names:
                    target = own_target(name) if name.split(".")[0] == "reg_runner" else None
                    if target is not None and target != module:
                        out.append((module, target, inside, child.lineno))

        visit(ast.parse(path.read_text()), False)
    return out


def circles(edges) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


# Third-party packages that take a noticeable share of a refused command's start-up: an import of one of our
# modules may wait inside a function only when that module loads one of these at its top (directly or through
# what it imports), so that a command refused on its arguments never pays for them.
HEAVY = {"torch", "numpy", "optuna", "matplotlib", "scipy", "datamaestro", "experimaestro", "tensorboard",
         "sqlalchemy", "pandas", "torchvision", "PIL", "joblib", "submitit",
         "pydantic"}  # with the schemas it builds: a command that Hydra itself refuses never loads them


@functools.cache
def third_party_at_top(module: str) -> frozenset:
    """The third-party packages a module imports at its top (its own lines only)."""
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):  # never run
                continue
            if isinstance(child, ast.Import):
                found.update(a.name.split(".")[0] for a in child.names)
            elif isinstance(child, ast.ImportFrom) and not child.level and child.module:
                found.add(child.module.split(".")[0])
            else:
                visit(child)

    visit(ast.parse(MODULES[module].read_text()))
    return frozenset(found - {"reg_runner"})


def heavy_at_top(module: str) -> set:
    """The heavy packages that importing ``module`` loads: its top-level imports, its packages', and theirs."""
    top = {}
    for a, b, nested, _ in imports():
        if not nested:
            top.setdefault(a, set()).add(b)
    seen, todo, found = set(), [module], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        found |= third_party_at_top(m) & HEAVY
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(top.get(m, ()))
    return found


def test_no_import_circle():
    assert circles({(a, b) for a, b, _, _ in imports()}) == []


def test_no_import_reaches_up_a_layer():
    upward = sorted(f"{a} -> {b} (line {n})" for a, b, _, n in imports() if layer(b) > layer(a))
    assert upward == [], "an import from a lower layer to a higher one:\n" + "\n".join(upward)


def test_own_modules_are_imported_inside_a_function_only_to_defer_a_heavy_package():
    light = sorted(f"{a} -> {b} (line {n})" for a, b, nested, n in imports() if nested and not heavy_at_top(b))
    assert light == [], "import these at the top of the file:\n" + "\n".join(light)


def test_the_heavy_package_rule_sees_through_what_a_module_imports():
    assert "torch" in heavy_at_top("reg_runner.trainer.engine")  # directly
    assert "torch" in heavy_at_top("reg_runner.run")  # through what it imports
    assert heavy_at_top("reg_runner.errors") == set() and heavy_at_top("reg_runner.dotted") == set()
    assert heavy_at_top("reg_runner.data.split") == {"pydantic"}  # its numpy is imported for type checkers only


def test_every_module_has_a_layer():
    assert all(isinstance(layer(m), int) for m in MODULES)
    assert layer("reg_runner.data") == 1 and layer("reg_runner.data.store") == 2 and layer("reg_runner.sweep.analysis") == 4
    assert layer("reg_runner.trainer.trial") == 2  # what a run knows of its search's trial: below the run
