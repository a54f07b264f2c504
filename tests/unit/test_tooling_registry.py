"""Loading tool modules from a directory, and `voice-agent tools` listing them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from voice_agent.cli import main
from voice_agent.exceptions import ToolLoadError
from voice_agent.tooling import ToolRegistry

GREET = '''
from voice_agent.tooling import ToolContext, tool


@tool(timeout=1.5)
async def greet(ctx: ToolContext, *, name: str) -> str:
    """Greet someone by name."""
    return f"hello {name}"


async def helper() -> None:
    """Not a tool: no decorator."""
'''

WIPE = '''
from typing import Annotated

from pydantic import Field

from voice_agent.tooling import ToolContext, tool


@tool(destructive=True)
async def wipe(ctx: ToolContext, *, days: Annotated[int, Field(ge=1, le=30)]) -> str:
    """Delete logs older than some days."""
    return "wiped"
'''


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (directory / name).write_text(textwrap.dedent(source))
    return directory


def test_load_registers_decorated_functions_of_each_module(tmp_path: Path) -> None:
    """Every @tool function in every public module is registered, by name."""
    path = _write(tmp_path / "tools", {"greet.py": GREET, "wipe.py": WIPE})
    registry = ToolRegistry.load(path)
    assert registry.names() == ["greet", "wipe"]
    greet = registry.get("greet")
    assert greet is not None
    assert greet.timeout_s == 1.5
    assert registry.source("wipe") == path / "wipe.py"


def test_private_modules_are_skipped(tmp_path: Path) -> None:
    """Files starting with "_" are helpers, not tool modules."""
    path = _write(tmp_path / "tools", {"_shared.py": "raise RuntimeError('not imported')"})
    assert ToolRegistry.load(path).names() == []


def test_a_tool_imported_into_another_module_is_not_counted_twice(tmp_path: Path) -> None:
    """Only tools defined in a module are collected from it."""
    path = _write(tmp_path / "tools", {"greet.py": GREET})
    loaded = ToolRegistry.load(path).get("greet")
    assert loaded is not None
    reexport = f"import sys\ngreet = sys.modules[{loaded.fn.__module__!r}].greet\n"
    _write(path, {"zz_reexport.py": reexport})
    assert ToolRegistry.load(path).names() == ["greet"]


def test_duplicate_names_are_a_load_error_naming_both_files(tmp_path: Path) -> None:
    """Two modules defining the same tool name cannot both load."""
    path = _write(tmp_path / "tools", {"a.py": GREET, "b.py": GREET})
    with pytest.raises(ToolLoadError) as caught:
        ToolRegistry.load(path)
    assert "b.py" in str(caught.value)
    assert "a.py" in str(caught.value)


def test_an_import_error_names_the_file(tmp_path: Path) -> None:
    """A module that fails to import is reported with its path and the error."""
    path = _write(tmp_path / "tools", {"broken.py": "import not_a_module_anywhere\n"})
    with pytest.raises(ToolLoadError, match=r"broken\.py: failed to import: ModuleNotFoundError"):
        ToolRegistry.load(path)


def test_a_malformed_tool_is_a_load_error(tmp_path: Path) -> None:
    """A definition error inside a module surfaces as a load error naming the file."""
    source = "from voice_agent.tooling import tool\n\n@tool\nasync def bad(ctx):\n    pass\n"
    path = _write(tmp_path / "tools", {"bad.py": source})
    with pytest.raises(ToolLoadError, match=r"bad\.py.*docstring"):
        ToolRegistry.load(path)


def test_a_missing_directory_is_a_load_error(tmp_path: Path) -> None:
    """A tools path that does not exist says so and names the setting."""
    with pytest.raises(ToolLoadError, match="VOICE_AGENT_TOOLS_PATH"):
        ToolRegistry.load(tmp_path / "nowhere")


def test_from_specs_refuses_duplicates(tmp_path: Path) -> None:
    """Building a registry from specs checks names too."""
    greet = ToolRegistry.load(_write(tmp_path / "tools", {"greet.py": GREET})).get("greet")
    assert greet is not None
    assert ToolRegistry.from_specs([greet]).names() == ["greet"]
    with pytest.raises(ToolLoadError):
        ToolRegistry.from_specs([greet, greet])


def test_describe_gives_name_description_schema_and_policy(tmp_path: Path) -> None:
    """`describe` resolves the default timeout and says whether confirmation is needed."""
    registry = ToolRegistry.load(_write(tmp_path / "tools", {"greet.py": GREET, "wipe.py": WIPE}))
    greet, wipe = registry.describe(5.0)
    assert set(greet) == {
        "name",
        "function_name",
        "description",
        "parameters",
        "destructive",
        "timeout_s",
        "confirm",
        "background",
    }
    assert greet["timeout_s"] == 1.5
    assert greet["confirm"] is False
    assert wipe == {
        "name": "wipe",
        "function_name": "wipe",
        "description": "Delete logs older than some days.",
        "parameters": {
            "type": "object",
            "properties": {"days": {"type": "integer", "minimum": 1, "maximum": 30}},
            "required": ["days"],
            "additionalProperties": False,
        },
        "destructive": True,
        "timeout_s": 5.0,
        "confirm": True,
        "background": False,
    }


def test_cli_tools_json_prints_the_described_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`voice-agent tools --json` prints `describe()` for VOICE_AGENT_TOOLS_PATH, each tool with
    the file it came from and whether the profile allows it (the built-in profile: none)."""
    path = _write(tmp_path / "tools", {"greet.py": GREET, "wipe.py": WIPE})
    monkeypatch.setenv("VOICE_AGENT_TOOLS_PATH", str(path))
    monkeypatch.setenv("VOICE_AGENT_TOOL_TIMEOUT_S", "4")
    assert main(["tools", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [{k: v for k, v in t.items() if k not in ("source", "allowed")} for t in printed] == (
        ToolRegistry.load(path).describe(4.0)
    )
    assert [(t["name"], t["source"], t["allowed"]) for t in printed] == [
        ("greet", {"kind": "python", "file": str(path / "greet.py")}, False),
        ("wipe", {"kind": "python", "file": str(path / "wipe.py")}, False),
    ]


def test_cli_tools_prints_a_readable_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json each tool is a line with its timeout, policy and arguments."""
    monkeypatch.setenv("VOICE_AGENT_TOOLS_PATH", str(_write(tmp_path / "t", {"wipe.py": WIPE})))
    assert main(["tools"]) == 0
    out = capsys.readouterr().out
    assert "wipe" in out
    assert "destructive, confirm" in out
    assert "days*" in out
    assert "Delete logs older than some days." in out


def test_cli_tools_exits_2_for_a_broken_tools_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module that fails to import: a clear message on stderr and exit code 2."""
    path = _write(tmp_path / "tools", {"broken.py": "raise RuntimeError('boom')\n"})
    monkeypatch.setenv("VOICE_AGENT_TOOLS_PATH", str(path))
    assert main(["tools", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "broken.py" in captured.err
    assert "boom" in captured.err


def test_cli_lists_the_bundled_example_tools(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The repository's own tools/ directory loads and lists its examples."""
    tools_dir = Path(__file__).resolve().parents[2] / "tools"
    monkeypatch.setenv("VOICE_AGENT_TOOLS_PATH", str(tools_dir))
    assert main(["tools", "--json"]) == 0
    names = [t["name"] for t in json.loads(capsys.readouterr().out)]
    assert names == [
        "create_ticket",
        "escalate_to_human",
        "get_incident_status",
        "list_open_incidents",
        "search_runbooks",
    ]
