"""atomic_path: the final file is complete or absent, and an old file survives a failure."""

from __future__ import annotations

import os
import stat

import pytest

from corrnet.atomic import atomic_path


def test_success_renames_with_umask_permissions(tmp_path):
    out = tmp_path / "new" / "report.json"
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp != out and not out.exists()
        tmp.write_text("done")
    assert out.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "weights.pt"
    out.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(out, suffix=".tmp.npz") as tmp:
            assert tmp.name.endswith(".tmp.npz")
            tmp.write_text("half written")
            raise RuntimeError("killed")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]
