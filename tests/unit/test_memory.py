"""The malloc arena limit: set once per process, never over the operator's MALLOC_ARENA_MAX."""

from __future__ import annotations

import platform

import pytest

from connector import memory


def test_set_once_on_glibc_and_never_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_done", False)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.limit_malloc_arenas() is False  # the operator's setting wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    glibc = platform.libc_ver()[0] == "glibc"
    assert memory.limit_malloc_arenas() is glibc  # this machine: glibc, mallopt accepted
    assert memory.limit_malloc_arenas() is False  # once per process
