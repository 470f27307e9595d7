"""Install anywhere: the wheels the Dockerfile builds, installed into a fresh virtualenv outside the repository, run
`gcl-server serve|migrate|openapi|--version` and `gcl --version` from another directory, with no path into the
repository and the virtualenv's bin not on PATH. The commands are read from deploy/Dockerfile, so the image and the
tests cannot drift apart."""

import email
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"  # no virtualenv's bin on it


def dockerfile_instructions(text):
    """[(INSTRUCTION, arguments)] with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


class Dockerfile:
    def __init__(self, path):
        self.instructions = dockerfile_instructions(path.read_text())

    def _runs(self):
        return [rest for word, rest in self.instructions if word == "RUN"]

    def command(self, marker):
        """The one RUN command (up to its first &&) that contains marker, as argv."""
        (found,) = [run.split("&&")[0].strip() for run in self._runs() if marker in run.split("&&")[0]]
        return shlex.split(found)

    def exec_form(self, word):
        (found,) = [rest for w, rest in self.instructions if w == word]
        if word == "HEALTHCHECK":
            found = found[found.index("CMD ") + 4 :]
        return json.loads(found)

    def env(self):
        env = {}
        for word, rest in self.instructions:
            if word == "ENV":
                env.update(item.split("=", 1) for item in shlex.split(rest))
        return env

    def user(self):
        (found,) = [rest for w, rest in self.instructions if w == "USER"]
        return found


def _swap(argv, mapping):
    return [mapping.get(arg, arg) for arg in argv]


def _version(project):
    return tomllib.loads((ROOT / project / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the wheels as the Dockerfile does and install them as it does into a fresh virtualenv."""
    tmp = tmp_path_factory.mktemp("install")
    docker = Dockerfile(DOCKERFILE)
    context = tmp / "context"  # the image's build context: only what the Dockerfile copies
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache")
    for folder in ("api", "sdk-python"):
        shutil.copytree(ROOT / folder, context / folder, ignore=ignore)
    wheels = tmp / "wheels"
    build = _swap(docker.command("pip wheel"), {"python": sys.executable, "/wheels": str(wheels)})
    # Offline: build with this virtualenv's setuptools instead of fetching one into an isolated build env.
    done = subprocess.run([*build, "--no-build-isolation", "-q"], cwd=context, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    built = sorted(wheels.glob("*.whl"))
    assert [w.name.split("-")[0] for w in built] == ["gcl", "gcl_server"]

    target = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    # The wheels' own dependencies come from this test run's virtualenv (a path entry, so its editable installs of
    # gcl_server and gcl, which are .pth hooks there, stay inactive); the installs themselves are real.
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    deps = Path(requests.__file__).resolve().parent.parent
    (site / "_test_dependencies.pth").write_text(f"{deps}\n")
    install = docker.command("pip install")
    assert install[-1] == "/wheels/*.whl"
    install = _swap(install[:-1], {"python": str(python)}) + [str(w) for w in built]
    done = subprocess.run([*install, "--no-deps", "--no-index", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return {"venv": target, "wheels": built, "cwd": elsewhere, "docker": docker, "tmp": tmp}


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GCL_", "VIRTUAL_ENV", "PYTHON"))}
    env.pop("DATABASE_URL", None)
    return {**env, "PATH": SYSTEM_PATH, **extra}


def _run(installed, *argv, **extra):
    exe = installed["venv"] / "bin" / argv[0]
    return subprocess.run(
        [str(exe), *argv[1:]], cwd=installed["cwd"], env=_env(**extra), capture_output=True, text=True, timeout=60
    )


def test_wheels_carry_license_metadata_and_data(installed):
    server = next(w for w in installed["wheels"] if w.name.startswith("gcl_server-"))
    with zipfile.ZipFile(server) as wheel:
        names = wheel.namelist()
        meta = email.message_from_bytes(wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    assert meta["Name"] == "gcl-server" and meta["Version"] == _version("api")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] and meta["Summary"] and meta.get_all("Classifier")
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "gcl_server/serving/gunicorn_conf.py" in names
    assert any(n.startswith("gcl_server/ui/templates/") for n in names)
    for copy in ("api/LICENSE", "sdk-python/LICENSE"):  # the packages ship the repository's license unchanged
        assert (ROOT / copy).read_bytes() == (ROOT / "LICENSE").read_bytes()


def test_commands_work_from_anywhere(installed):
    located = _run(installed, "python", "-c", "import gcl, gcl_server; print(gcl_server.__file__, gcl.__file__)")
    assert located.returncode == 0, located.stderr
    assert all(path.startswith(str(installed["venv"])) for path in located.stdout.split())  # not the repository's
    assert _run(installed, "gcl-server", "--version").stdout.strip() == f"gcl-server {_version('api')}"
    assert _run(installed, "gcl", "--version").stdout.strip() == f"gcl {_version('sdk-python')}"
    url = f"sqlite:///{installed['tmp'] / 'migrated.db'}"
    migrated = _run(installed, "gcl-server", "migrate", DATABASE_URL=url)
    assert migrated.returncode == 0 and "migrations applied" in migrated.stdout, migrated.stderr
    spec = _run(installed, "gcl-server", "openapi")
    assert spec.returncode == 0, spec.stderr
    here = subprocess.run([sys.executable, "-m", "gcl_server.cli", "openapi"], capture_output=True, text=True)
    assert spec.stdout == here.stdout  # the same document as this checkout serves


def test_serve_as_the_image_does(installed):
    """The Dockerfile's CMD from another directory; its HEALTHCHECK command decides when the server is up."""
    docker, data = installed["docker"], installed["tmp"] / "data"
    port = free_port()
    env = _env(**{**docker.env(), "GCL_HOST": "127.0.0.1", "GCL_PORT": str(port), "GCL_DATA_DIR": str(data)})
    cmd = docker.exec_form("CMD")
    assert cmd == ["gcl-server", "serve"]
    log = installed["tmp"] / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(installed["venv"] / "bin" / cmd[0]), *cmd[1:]],
            cwd=installed["cwd"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        check = docker.exec_form("HEALTHCHECK")
        check = [str(installed["venv"] / "bin" / check[0]), *check[1:]]
        for _ in range(300):  # the healthcheck has a 2 s timeout of its own; this bounds the wait at ~30 s
            assert proc.poll() is None, log.read_text()[-3000:]
            if subprocess.run(check, env=env, capture_output=True, timeout=10).returncode == 0:
                break
        else:
            pytest.fail("the Dockerfile's HEALTHCHECK never passed")
        base = f"http://127.0.0.1:{port}/api"
        ready = requests.get(f"{base}/ready", timeout=5).json()
        assert ready["status"] == "ready" and ready["version"] == _version("api")
        created = requests.post(f"{base}/v2/concurrency_limits/", json={"name": "anywhere", "limit": 2}, timeout=5)
        assert created.status_code == 201
        assert (data / "gcl.db").exists()  # GCL_DATA_DIR, not the repository's data/
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()[-3000:]


def test_image_runs_as_non_root():
    docker = Dockerfile(DOCKERFILE)
    assert docker.user().split(":")[0] not in ("0", "root")
    froms = [rest for word, rest in docker.instructions if word == "FROM"]
    assert froms and all("-slim" in rest for rest in froms)
