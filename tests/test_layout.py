"""The package's layout (docs/architecture.md): no import circles, lazy imports
included, and only a family's own folder and the registry import a family."""
import ast
import os

from attnkernels.families import FAMILIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "attnkernels")
FAMILY_NAMES = {f.name for f in FAMILIES}


def module_name(path):
    rel = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def imports(path):
    """The attnkernels modules a file imports, anywhere in it (function-level
    imports too): ``from . import x`` counts as the submodule when there is one."""
    name = module_name(path)
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("attnkernels")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("attnkernels"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if os.path.exists(module_path(sub)) else target)
    return found - {name}


def module_path(name):
    base = os.path.join(ROOT, *name.split("."))
    return base + ".py" if os.path.exists(base + ".py") else os.path.join(base, "__init__.py")


def graph():
    files = [os.path.join(d, f) for d, _, fs in os.walk(PACKAGE) for f in fs if f.endswith(".py")]
    return {module_name(p): imports(p) for p in files}


def test_no_import_circles():
    edges = graph()
    done, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt in edges and not node.startswith(nxt + "."):  # a module imports its package's parts
                visit(nxt)
        stack.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)


def test_the_circle_check_finds_a_circle(monkeypatch):
    monkeypatch.setitem(globals(), "graph", lambda: {"a": {"b"}, "b": {"c"}, "c": {"a"}})
    try:
        test_no_import_circles()
    except AssertionError as e:
        assert "a -> b -> c -> a" in str(e)
    else:
        raise AssertionError("no circle found")


def test_only_a_family_and_the_registry_import_a_family():
    for name, targets in graph().items():
        parts = name.split(".")
        own = parts[1] if len(parts) > 1 and parts[1] in FAMILY_NAMES else None
        for target in targets:
            family = target.split(".")[1] if target.count(".") else None
            if family in FAMILY_NAMES and family != own and name != "attnkernels.families":
                # a family may build on another's upstream classes (Triplet on CBAM's BasicConv)
                assert own is not None and target.endswith(".reference"), (name, target)


def test_every_package_folder_is_a_regular_package():
    """pip install . (not editable) ships only folders with an __init__.py
    (setuptools' find_packages): a folder of modules without one would be missing."""
    for folder, _, files in os.walk(PACKAGE):
        if "__pycache__" not in folder and any(f.endswith(".py") for f in files):
            assert "__init__.py" in files, os.path.relpath(folder, ROOT)
