"""The installed version of gcl-server: read from the package metadata, so api/pyproject.toml is its one place."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("gcl-server")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    VERSION = "0+unknown"
