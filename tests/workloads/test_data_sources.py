"""Every data artifact that a source serves today is fetched; the ones no source serves are
exactly those known to have vanished, each with its reason.

In CI the cache starts empty (``.ci/run`` points ``OPTKIT_CACHE`` at a fresh folder), so this
test downloads every artifact the suite reads from its registry source, and fails, naming the
artifact and the reason, the day another source disappears.
"""

from __future__ import annotations

import optkit.data as data

VANISHED = {"cifar10-10k", "bigbench-social_iqa", "bigbench-winowhy", "bigbench-strategyqa"}
"""Served by no registry since 2026-12 (the bigbench==1.0.0 source archive): user copies only."""


def test_every_served_artifact_fetches_and_only_the_known_vanished_are_unavailable() -> None:
    found = data.statuses(data.artifacts())
    unavailable = {name for name, status in found.items() if status.state == "unavailable"}
    reasons = {name: found[name].detail for name in unavailable - VANISHED}
    assert not reasons, f"artifacts no source serves today: {reasons}"
    for name in sorted(set(found) - unavailable):
        path = data.fetch(name)
        assert data.tree_sha256(path) == data.get_artifact(name).sha256, name
    for name in unavailable:
        assert f"optkit data add {name} PATH" in found[name].detail
