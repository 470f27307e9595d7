"""One reader of the environment: settings.py. Every other server module gets its values from the settings."""

import ast
from pathlib import Path

import pytest
from gcl_server import settings

SOURCE = Path(settings.__file__).resolve().parent
OS_ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_uses(source):
    """Line numbers where `source` touches the process environment through os (os.environ, os.getenv, from os import
    environ, ...)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            through_os = node.attr in OS_ENVIRONMENT and isinstance(node.value, ast.Name) and node.value.id == "os"
        elif isinstance(node, ast.ImportFrom):
            through_os = node.module == "os" and any(alias.name in OS_ENVIRONMENT for alias in node.names)
        else:
            continue
        if through_os:
            lines.append(node.lineno)
    return sorted(lines)


def test_the_check_sees_every_way_in():
    source = "import os\nfrom os import getenv\na = os.environ.get('X')\nb = os.getenv('Y')\nos.environ['Z'] = '1'\n"
    assert environment_uses(source) == [2, 3, 4, 5]
    assert environment_uses("environ = {}\nenviron.get('PATH_INFO')\n") == []  # a WSGI environ is not os's


def test_only_settings_reads_the_environment():
    modules = sorted(SOURCE.rglob("*.py"))
    assert len(modules) > 40 and SOURCE / "serving" / "connections.py" in modules
    found = {
        str(path.relative_to(SOURCE)): uses
        for path in modules
        if path != SOURCE / "settings.py" and (uses := environment_uses(path.read_text()))
    }
    assert found == {}, f"read the environment through settings.py, not directly: {found}"
    assert environment_uses((SOURCE / "settings.py").read_text())  # and settings.py does


def test_serving_settings_come_from_the_environment():
    loaded = settings.load(
        environ={"GCL_HEAD_TIMEOUT_SECONDS": "0.5", "SCRIPT_NAME": "/gcl", "PROMETHEUS_MULTIPROC_DIR": "/tmp/m"}
    )
    assert (loaded["HEAD_TIMEOUT_SECONDS"], loaded["SCRIPT_NAME"], loaded["PROMETHEUS_MULTIPROC_DIR"]) == (
        0.5,
        "/gcl",
        "/tmp/m",
    )
    defaults = settings.load(environ={"GCL_HEAD_TIMEOUT_SECONDS": ""})
    assert (defaults["HEAD_TIMEOUT_SECONDS"], defaults["SCRIPT_NAME"], defaults["PROMETHEUS_MULTIPROC_DIR"]) == (
        5.0,
        "",
        "",
    )
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(settings.SettingsError, match="GCL_HEAD_TIMEOUT_SECONDS"):
            settings.load(environ={"GCL_HEAD_TIMEOUT_SECONDS": bad})


def test_hand_down_reaches_the_settings_of_later_processes(monkeypatch):
    monkeypatch.delenv("GCL_SQLITE_CHECKPOINTER", raising=False)
    assert settings.load()["SQLITE_CHECKPOINTER"] is False
    monkeypatch.setenv("GCL_SQLITE_CHECKPOINTER", "0")  # restored after the test
    settings.hand_down("SQLITE_CHECKPOINTER", "1")
    assert settings.load()["SQLITE_CHECKPOINTER"] is True
