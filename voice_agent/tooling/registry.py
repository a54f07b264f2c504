"""The tools a process knows: loaded from the Python modules in a directory.

Each `*.py` file in the directory (not starting with `_`) is imported under a private module
namespace, so tool modules never shadow or get shadowed by installed packages, and every
`ToolSpec` defined in it (by `@tool`) is registered. Import failures and clashing names are
`ToolLoadError`s that name the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from voice_agent.exceptions import ToolLoadError
from voice_agent.tooling.spec import ToolSpec

_NAMESPACE = "_voice_agent_tools"


class ToolRegistry:
    """Tool specs by name, and by the function name the model calls them by."""

    def __init__(self, specs: dict[str, ToolSpec], *, sources: dict[str, Path] | None = None):
        self._specs = dict(specs)
        self._sources = dict(sources or {})
        self._functions: dict[str, ToolSpec] = {}
        for spec in self._specs.values():
            clash = self._functions.get(spec.function_name)
            if clash is not None:
                raise ToolLoadError(
                    f"tools {clash.name!r} and {spec.name!r} would both be offered to the model "
                    f"as {spec.function_name!r}; rename one"
                )
            self._functions[spec.function_name] = spec

    @classmethod
    def from_specs(cls, specs: Iterable[ToolSpec]) -> ToolRegistry:
        """A registry of the given specs (tests, embedding); duplicate names are an error."""
        by_name: dict[str, ToolSpec] = {}
        for spec in specs:
            if spec.name in by_name:
                raise ToolLoadError(f"two tools are named {spec.name!r}")
            by_name[spec.name] = spec
        return cls(by_name)

    @classmethod
    def merged(cls, *registries: ToolRegistry) -> ToolRegistry:
        """One registry of several (Python modules, MCP servers); a name in two is an error."""
        specs: dict[str, ToolSpec] = {}
        sources: dict[str, Path] = {}
        for registry in registries:
            for spec in registry.specs():
                if spec.name in specs:
                    raise ToolLoadError(f"two tool sources define a tool named {spec.name!r}")
                specs[spec.name] = spec
            sources.update(registry._sources)
        return cls(specs, sources=sources)

    @classmethod
    def load(cls, path: Path) -> ToolRegistry:
        """Import every tool module in `path` and register the tools they define."""
        if not path.is_dir():
            raise ToolLoadError(f"tools directory {path} does not exist (VOICE_AGENT_TOOLS_PATH)")
        package = f"{_NAMESPACE}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        specs: dict[str, ToolSpec] = {}
        sources: dict[str, Path] = {}
        for file in sorted(path.glob("*.py")):
            if file.name.startswith("_"):
                continue
            module = _import(file, f"{package}.{file.stem}")
            for spec in _specs_in(module):
                if spec.name in specs:
                    raise ToolLoadError(
                        f"{file}: tool {spec.name!r} is already defined in {sources[spec.name]}"
                    )
                specs[spec.name] = spec
                sources[spec.name] = file
        return cls(specs, sources=sources)

    def get(self, name: str) -> ToolSpec | None:
        """The tool named `name`, if registered."""
        return self._specs.get(name)

    def for_function(self, function_name: str) -> ToolSpec | None:
        """The tool the model calls `function_name`, if registered (exact match only)."""
        return self._functions.get(function_name)

    def specs(self) -> list[ToolSpec]:
        """Every tool, by name."""
        return [self._specs[name] for name in self.names()]

    def names(self) -> list[str]:
        """Every tool name, sorted."""
        return sorted(self._specs)

    def source(self, name: str) -> Path | None:
        """The file a loaded tool came from."""
        return self._sources.get(name)

    def describe(self, default_timeout_s: float) -> list[dict[str, Any]]:
        """Each tool's name, description, parameter schema and policy (`voice-agent tools`)."""
        return [
            {
                "name": spec.name,
                "function_name": spec.function_name,
                "description": spec.description,
                "parameters": spec.parameters,
                "destructive": spec.destructive,
                "timeout_s": spec.timeout_s or default_timeout_s,
                "confirm": spec.needs_confirmation,
                "background": spec.background,
            }
            for spec in self.specs()
        ]

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs


def _import(file: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ToolLoadError(f"{file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before running, as a normal import would (pydantic and dataclasses look it up).
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # importing a developer's module may raise anything
        sys.modules.pop(module_name, None)
        raise ToolLoadError(f"{file}: failed to import: {type(e).__name__}: {e}") from e
    return module


def _specs_in(module: ModuleType) -> list[ToolSpec]:
    # Only tools defined here: a spec imported from another tool module is not a second tool.
    return [
        value
        for value in vars(module).values()
        if isinstance(value, ToolSpec) and getattr(value.fn, "__module__", None) == module.__name__
    ]
