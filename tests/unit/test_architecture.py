"""The rooms' arrows (docs/architecture.md), checked on every import in the source, function-level ones too."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# each room's folder and the name it imports as (pyproject's package-dir)
ROOMS = {"core": "medtrain.core", "data_prep": "medtrain.data_prep", "eval": "medtrain.eval",
         "launch": "medtrain.launch", "medtrain": "medtrain", "recipes": "medtrain.recipes"}
# the rooms inside medtrain/: what runs on a rank, the orchestrators, the command
INNER = ("train", "contamination", "experiments", "cli")
ALLOWED = {
    "core": set(),
    "data_prep": {"core"},
    "eval": {"core"},  # prompt templates and option parsing live in core (core.templates), shared with prep
    "launch": {"core", "data_prep"},
    "train": {"core", "data_prep"},  # the ranks read run_spec.json and never import the cluster side
    "contamination": {"core", "data_prep", "eval"},  # the datasets and their tokenizer, eval's question readers
    "experiments": {"core", "data_prep", "eval", "launch", "train", "recipes", "contamination"},  # all but the command
}


def room_of(module: str) -> str:
    """'medtrain.core.recipe' -> 'core'; 'medtrain.train.trainer' -> 'train'; 'medtrain' -> 'medtrain'."""
    parts = module.split(".")
    inside = len(parts) > 1 and parts[0] == "medtrain"
    return parts[1] if inside and (parts[1] in ROOMS or parts[1] in INNER) else parts[0]


def _sources() -> dict[str, Path]:
    """module name -> its file, for every module of ours."""
    return {".".join((package, *path.relative_to(REPO / room).with_suffix("").parts)).removesuffix(".__init__"): path
            for room, package in ROOMS.items() for path in (REPO / room).rglob("*.py")}


def _imports(tree: ast.AST) -> set[str]:
    """Every absolute import target (`a.b` and `a.b.name`), also inside code held in strings (the `python -c`
    commands sent to remote hosts), which no import of the module itself would reveal."""
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif (code := _string_code(node)) is not None and "import " in code:
            try:
                targets |= _imports(ast.parse(code))
            except SyntaxError:
                pass  # prose that mentions an import
    return targets


def _string_code(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with each {field} standing in as 0, so the code around it parses."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "0" for v in node.values)
    return None


SOURCES = _sources()
IMPORTS = {m: _imports(ast.parse(path.read_text(encoding="utf-8"))) for m, path in SOURCES.items()}


def _modules() -> dict[str, set[str]]:
    """module name -> the modules of ours it imports."""
    graph = {m: {t for t in targets if t.split(".")[0] == "medtrain"} for m, targets in IMPORTS.items()}
    return {m: {d for d in deps if d in graph} | {d.rsplit(".", 1)[0] for d in deps if d not in graph
                                                   and d.rsplit(".", 1)[0] in graph} for m, deps in graph.items()}


GRAPH = _modules()


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_lower_rooms_import_only_the_rooms_below_them(room):
    bad = {m: sorted(d for d in deps if room_of(d) not in ALLOWED[room] | {room})
           for m, deps in GRAPH.items() if room_of(m) == room}
    assert not {m: d for m, d in bad.items() if d}


def test_every_module_lives_in_a_room():
    """medtrain/ itself holds only the package's entry points; everything else is in a room."""
    assert sorted(m for m in SOURCES if room_of(m) == "medtrain") == ["medtrain", "medtrain.__main__"]


def test_no_module_imports_one_that_imports_it_back():
    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            for d in GRAPH.get(m, ()):
                if d == goal:
                    return True
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return False

    cycles = sorted((m, d) for m, deps in GRAPH.items() for d in deps if d != m and reaches(d, m))
    assert not cycles


def test_every_room_imports_as_medtrain():
    """The wheel's one top-level name: no module of ours is imported by a bare room name."""
    bare_rooms = set(ROOMS) - {"medtrain"}
    bare = sorted(f"{m} -> {t}" for m, targets in IMPORTS.items() for t in targets if t.split(".")[0] in bare_rooms)
    assert not bare
