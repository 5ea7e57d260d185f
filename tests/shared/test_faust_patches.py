"""The faust / aiokafka patches are checked against the versions they were written for."""

from __future__ import annotations

import warnings
from importlib import metadata

import pytest

from shared import faust_patches


def test_the_installed_versions_are_the_ones_the_patches_were_written_for() -> None:
    assert faust_patches.version_mismatches() == []


def test_another_version_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda name: "9.9.9" if name == "aiokafka" else real(name))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        faust_patches.warn_on_other_versions()
    assert [str(w.message) for w in caught] == [
        "aiokafka 9.9.9 is installed; shared/faust_patches.py was written for 0.14.0: "
        "check each patch there against the new code"]
    assert all(w.category is RuntimeWarning for w in caught)
