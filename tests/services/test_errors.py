"""Error codes are members of their error classes: a client sees each code with one HTTP status, and no raise
spells a code as a string of its own (a typo there was a new, undocumented code)."""

from __future__ import annotations

import ast
from pathlib import Path

import app.errors as errors
from tests.conftest import ROOT

PACKAGES = ("app", "ingest", "vectorstore", "prompts", "evals")


def _error_classes() -> list[type[errors.KbError]]:
    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.KbError)]


def _codes(cls: type[errors.KbError]) -> dict[str, str]:
    """The class's own codes: ``code`` and its UPPER_CASE members (not inherited ones)."""
    own = {name: value for name, value in vars(cls).items() if name.isupper() and isinstance(value, str)}
    return {"code": cls.code, **own}


def _raises_an_error(call: ast.Call) -> bool:
    """A call of one of kb's error classes (the MCP SDK's MCPError takes a JSON-RPC number as its code)."""
    return isinstance(call.func, ast.Name) and call.func.id.endswith("Error") and call.func.id != "MCPError"


def test_every_code_has_one_http_status() -> None:
    seen: dict[str, tuple[int, str]] = {}
    for cls in _error_classes():
        for code in _codes(cls).values():
            status, where = seen.setdefault(code, (cls.http_status, cls.__name__))
            assert status == cls.http_status, f"{code!r} is {status} in {where} but {cls.http_status} in {cls.__name__}"


def test_raises_name_their_code_as_a_member_of_the_class_they_raise() -> None:
    problems = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not _raises_an_error(node):
                    continue  # code= of anything else (an OAuth authorization code) is not an error code
                for kw in node.keywords:
                    if kw.arg != "code":
                        continue
                    where = f"{Path(path).relative_to(ROOT)}:{kw.value.lineno}"
                    raised = node.func.id if isinstance(node.func, ast.Name) else None
                    value = kw.value
                    if isinstance(value, ast.Name):  # a variable: each value it takes is checked where it is set
                        continue
                    if not (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)):
                        problems.append(f"{where}: code= must be {raised}.SOME_CODE")
                        continue
                    owner = getattr(errors, value.value.id, None)
                    if value.value.id != raised or owner is None or value.attr not in _codes(owner):
                        problems.append(f"{where}: {value.value.id}.{value.attr} is not a code of {raised}")
    assert not problems, "\n".join(problems)
