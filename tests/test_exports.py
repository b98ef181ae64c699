"""The public API: everything public is importable from aioredis_patterns, nothing else is."""

from __future__ import annotations
import __future__

import inspect
import types

import aioredis_patterns
from aioredis_patterns import _exceptions


def test_all_lists_exactly_the_public_names() -> None:
    """__all__ equals the public attributes (submodules aside), in ASCII order as ruff keeps it."""
    public = {
        name
        for name, value in vars(aioredis_patterns).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }
    assert set(aioredis_patterns.__all__) - {"__version__"} == public
    assert aioredis_patterns.__all__ == sorted(aioredis_patterns.__all__)


def test_every_public_object_is_documented() -> None:
    """Each exported class and function has a docstring."""
    for name in aioredis_patterns.__all__:
        obj = getattr(aioredis_patterns, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_every_exception_is_exported_under_one_root() -> None:
    """Each exception class is exported, derives from AioRedisPatternsError and is in the tree."""
    root = aioredis_patterns.AioRedisPatternsError
    tree = _exceptions.__doc__ or ""
    for name in _exceptions.__all__:
        cls = getattr(_exceptions, name)
        assert issubclass(cls, root)
        assert name in aioredis_patterns.__all__
        assert name in tree, f"{name} is missing from the tree in _exceptions' docstring"


def test_version_comes_from_package_metadata() -> None:
    """__version__ is the installed distribution's version."""
    from importlib.metadata import version

    assert aioredis_patterns.__version__ == version("aioredis_patterns")
