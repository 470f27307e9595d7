"""The public surface is exactly what sdk-python/README.md documents: ``gcl.__all__`` (sorted) and the public
modules, each on one axis (public names without an underscore, everything else private)."""

import pkgutil
import re
from pathlib import Path

import gcl
import gcl.asyncio
import gcl.sync

README = Path(__file__).resolve().parents[2] / "sdk-python" / "README.md"


def documented(section):
    """The names in backticks on the README's line that starts with ``section``."""
    line = next(line for line in README.read_text().splitlines() if line.startswith(section))
    return re.findall(r"`([\w.]+)`", line.split(":", 1)[1])


def test_all_is_sorted_and_is_the_documented_surface():
    assert gcl.__all__ == sorted(gcl.__all__)
    assert gcl.__all__ == sorted(documented("- `gcl`"))
    for name in gcl.__all__:
        assert getattr(gcl, name).__module__.startswith("gcl")


def test_public_modules_are_the_documented_ones():
    modules = {m.name for m in pkgutil.iter_modules(gcl.__path__)}
    assert {m for m in modules if not m.startswith("_")} == set(documented("- modules"))
    assert gcl.sync.__all__ == gcl.asyncio.__all__ == ["concurrency", "rate_limit"]
