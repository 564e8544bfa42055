"""The house rules a maintainer reads the code by: no product function over 60 lines, no CLI function over 40
(a command parses its options and calls one library function), no source file citing a document the repository
does not hold, and project imports at the top of each module."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("medtrain", "core", "launch", "data_prep", "eval", "recipes")


def _functions():
    for room in PRODUCT:
        for path in sorted((REPO / room).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield path.relative_to(REPO), node


def test_no_product_function_is_over_60_lines():
    long = [f"{path}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)" for path, n in _functions()
            if n.end_lineno - n.lineno + 1 > 60]
    assert not long


def test_no_cli_function_is_over_40_lines():
    long = [f"{path}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)" for path, n in _functions()
            if path.parts[:2] == ("medtrain", "cli") and n.end_lineno - n.lineno + 1 > 40]
    assert not long


def test_the_length_rule_sees_a_long_function(tmp_path):
    """The walk above counts what it claims to: a 61-line function is found."""
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    tree = ast.parse(f"def f():\n{body}\n")
    node = tree.body[0]
    assert node.end_lineno - node.lineno + 1 == 61


def test_no_source_file_cites_a_document_outside_the_repository():
    """What the code relies on from the design is in docs/, which ships with the repository."""
    cites = [f"{p}" for room in PRODUCT for p in (REPO / room).rglob("*.py")
             if any(name in p.read_text(encoding="utf-8") for name in ("DESIGN.md", "STYLE.md", "../shared"))]
    assert not cites


# the project's modules that load torch or transformers when imported: the only ones a function may import
# inside itself, so that `medtrain --help`, plan and launch start in a fraction of a second
DEFERRED = {"medtrain.train.trainer", "medtrain.train.export", "medtrain.train.model_dir", "medtrain.eval.run",
            "medtrain.eval.clean", "medtrain.eval.model", "medtrain.eval.generate"}


def test_project_imports_sit_at_module_top_unless_deferred_on_purpose():
    inside = []
    for path, fn in _functions():
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medtrain") \
                    and node.module not in DEFERRED:
                inside.append(f"{path}:{node.lineno} {node.module}")
    assert not inside


ROOMS = {"medtrain.core": "core", "medtrain.launch": "launch", "medtrain.data_prep": "data_prep",
         "medtrain.eval": "eval", "medtrain": "medtrain"}


def _file_of(module: str) -> Path | None:
    for package, folder in ROOMS.items():
        if module == package or module.startswith(package + "."):
            rest = module[len(package):].lstrip(".").split(".") if module != package else []
            base = REPO / folder / Path(*rest) if rest else REPO / folder
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
    return None


def _loads_torch(module: str, seen: set[str]) -> bool:
    """Whether importing `module` imports torch or transformers, following its module-level imports."""
    path = _file_of(module)
    if path is None or module in seen:
        return False
    seen.add(module)
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] + [f"{node.module}.{a.name}" for a in node.names] \
            if isinstance(node, ast.ImportFrom) and node.module else []
        if any(n.split(".")[0] in ("torch", "transformers", "deepspeed") for n in names):
            return True
        if any(_loads_torch(n, seen) for n in names if n.startswith("medtrain")):
            return True
    return False


def test_deferred_modules_are_the_heavy_ones():
    """Each module on the deferred list does load torch or transformers (else it belongs at the top)."""
    assert not [m for m in sorted(DEFERRED) if not _loads_torch(m, set())]
    assert not _loads_torch("medtrain.cli", set())  # and the command itself starts without them
