"""The hang watchdog's per-phase allowances and checkpoint verification, in-process."""

from __future__ import annotations

import pytest


def test_the_watchdog_gives_each_phase_its_own_allowance(tmp_path):
    import json

    from medtrain.launch.watchdog import Allowances, Watchdog

    allow = Allowances(step=20, setup=300, save=600)
    assert allow.dist_timeout_minutes == pytest.approx(11)
    dog = Watchdog(tmp_path, attempt=0, world=2, allow=allow, started=1000.0)
    beat = {"host": "h", "pid": 1, "pgid": 1, "attempt": 0, "step": 3, "code": None}
    (tmp_path / "rank0.json").write_text(json.dumps({**beat, "rank": 0, "phase": "save", "time": 1000.0}))
    (tmp_path / "rank1.json").write_text(json.dumps({**beat, "rank": 1, "phase": "step", "time": 1000.0}))
    assert dog.check(now=1019.0) is None
    hang = dog.check(now=1021.0)
    assert hang.stalled == [1], "a save may take longer than a step"
    assert "in step 4" in hang.where(1)
    (tmp_path / "rank1.json").unlink()
    assert dog.check(now=1200.0) is None, "a rank not started yet has the setup allowance"
    assert dog.check(now=1301.0).missing == [1]
    assert Watchdog(tmp_path, 0, 2, Allowances(0, 300, 600), 0.0).check(now=1e9) is None, "hang_timeout 0: off"


def test_verification_names_the_damaged_file(tmp_path):
    import json

    from medtrain.core.checkpoint_files import MANIFEST, MARKER, size_and_crc32, verify

    ckpt = tmp_path / "step_000004"
    ckpt.mkdir()
    (ckpt / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"x" * 1000)
    name = "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    files = {name: {**size_and_crc32(ckpt / name), "rank": 1}}
    (ckpt / MANIFEST).write_text(json.dumps({"files": files}))
    assert verify(ckpt).state == "incomplete"
    (ckpt / MARKER).write_text("4\n")
    assert verify(ckpt).state == "complete"
    (ckpt / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"y" * 1000)
    bad = verify(ckpt)
    assert bad.state == "damaged" and "CRC-32" in bad.reason and "optim_states" in bad.reason
    assert verify(ckpt, deep=False).state == "complete", "sizes alone cannot see a rewrite"
    assert verify(ckpt, mine=lambda writer: writer == 0).state == "complete", "rank 0 checks only its share"
