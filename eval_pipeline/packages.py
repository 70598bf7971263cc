"""Versions of the installed packages that shape a result, recorded with it (a different version may change it)."""

from importlib import metadata

# What the result JSON records: the pipeline, the orchestration and every library a number or a check comes from.
PACKAGES = ("eval-pipeline", "dagster", "pandas", "numpy", "pyarrow", "scikit-learn", "great-expectations",
            "evidently", "s3fs", "skops")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """name -> installed version, or "not installed"."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
