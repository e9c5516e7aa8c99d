"""The house rules, read from the code's own imports (``ast``, nothing imported or run).

* ``app/`` holds only ``main.py``, ``config.py`` and rooms, each room with a docstring.
* Services (and every other non-edge module of a domain) import neither FastAPI nor arq.
* Only ``app.platform.queue`` (the job-queue adapter) and ``worker/`` import arq.
* Nothing under ``app/`` imports ``worker/``.
* No import cycle between rooms. A domain's HTTP routes (``routes``, ``link_routes``) belong to
  the web edge, so ``exports`` (its services) and ``exports:routes`` are separate nodes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
EDGE_MODULES = {"routes", "link_routes"}
DOMAINS = {"exports", "upstream", "webhooks", "sandbox", "archive", "console", "feeds"}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in ("app", "worker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from app.platform import keys`` imports the module ``app.platform.keys``
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _room(module: str) -> str:
    """The node a module belongs to in the room graph."""
    parts = module.split(".")
    if parts[0] == "worker":
        return "worker"
    if len(parts) < 3:  # app, app.main, app.config, or a room's own __init__
        return module if len(parts) < 2 or parts[1] in {"main", "config"} else f"app.{parts[1]}"
    room = f"app.{parts[1]}"
    return f"{room}:routes" if parts[1] in DOMAINS and parts[-1] in EDGE_MODULES else room


MODULES = dict(_modules())
IMPORTS = {module: _imports(path) for module, path in MODULES.items()}


def test_app_holds_only_main_config_and_rooms_each_with_a_docstring() -> None:
    loose = sorted(p.name for p in APP.glob("*.py"))
    assert loose == ["__init__.py", "config.py", "main.py"]
    rooms = [p for p in APP.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert rooms
    for room in rooms:
        init = room / "__init__.py"
        assert init.exists(), f"{room.name}/ has no __init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{room.name}/ says nothing"


@pytest.mark.parametrize("framework", ["fastapi", "starlette", "arq"])
def test_services_import_no_web_framework_and_no_queue(framework: str) -> None:
    offenders = [
        module
        for module, imported in IMPORTS.items()
        if _room(module).split(".")[-1] in DOMAINS
        and ":" not in _room(module)
        and module.split(".")[1] != "sandbox"  # the sandbox is a web app of its own
        and any(name == framework or name.startswith(framework + ".") for name in imported)
    ]
    assert offenders == []


def test_only_the_queue_adapter_and_the_worker_know_arq() -> None:
    knows_arq = sorted(
        module
        for module, imported in IMPORTS.items()
        if any(name == "arq" or name.startswith("arq.") for name in imported)
    )
    assert knows_arq
    assert all(m == "app.platform.queue" or m.startswith("worker") for m in knows_arq), knows_arq


def test_nothing_under_app_imports_the_worker() -> None:
    offenders = {
        module: sorted(n for n in imported if n == "worker" or n.startswith("worker."))
        for module, imported in IMPORTS.items()
        if module.startswith("app")
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def _room_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, imported in IMPORTS.items():
        source = _room(module)
        for name in imported:
            if name in MODULES and _room(name) != source:
                graph.setdefault(source, set()).add(_room(name))
    return graph


def test_no_import_cycle_between_rooms() -> None:
    graph = _room_graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(room: str) -> None:
        if room in done:
            return
        assert room not in visiting, " -> ".join([*visiting[visiting.index(room) :], room])
        visiting.append(room)
        for target in sorted(graph.get(room, ())):
            visit(target)
        visiting.pop()
        done.add(room)

    for room in sorted(graph):
        visit(room)
    assert "app.platform" in graph and "app.web" in graph  # the graph was really built


def test_the_platform_stands_on_nothing_but_config() -> None:
    above = sorted(
        room for room in _room_graph().get("app.platform", set()) if room != "app.config"
    )
    assert above == []
