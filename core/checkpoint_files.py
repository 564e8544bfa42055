"""A checkpoint directory's files against its manifest: complete, incomplete or damaged.

Reading this needs no torch and no process group, so the launcher (which step will a restart resume from?),
`medtrain checkpoints`, export and the sweep share it with the ranks. medtrain/train/checkpoint.py writes what this
reads.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medtrain.core.errors import UserError
from medtrain.core.log import get_logger

log = get_logger(__name__)

MARKER = "COMPLETE"
MANIFEST = "manifest.json"
_WRITER = re.compile(r"rank_?(\d+)")



def tag_for(step: int) -> str:
    return f"step_{step:06d}"


def step_of(path: Path) -> int:
    return int(path.name.removeprefix("step_"))


def writer_of(name: str) -> int:
    """The rank that wrote a file of a checkpoint: DeepSpeed's `*zero_pp_rank_R_*`, our `rng_rankR.pt`; the
    rest (trainer_state.json, config.json, mp_rank_00_*) is rank 0's."""
    m = _WRITER.search(name)
    return int(m.group(1)) if m else 0


def size_and_crc32(path: Path, chunk: int = 16 << 20) -> dict:
    """Size and CRC-32 (zlib's, GB/s): enough to catch a truncated or overwritten shard, cheap enough to read
    back every file of a 13B checkpoint at every save."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return {"size": size, "crc32": f"{crc:08x}"}


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed or exported; says why and what to do."""


@dataclass
class Verdict:
    path: Path
    state: str
    """complete | incomplete | damaged."""
    reason: str = ""
    size: int = 0

    @property
    def usable(self) -> bool:
        return self.state == "complete"

    @property
    def step(self) -> int:
        return step_of(self.path)


def verify(path: Path, *, deep: bool = True, mine: Callable[[int], bool] | None = None,
           marker: bool = True) -> Verdict:
    """Check a checkpoint against its manifest: every file there, with its size and (deep) its CRC. `mine`
    limits the check to files written by some ranks, so each rank of a resumed run reads only its share."""
    path = Path(path)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else 0
    if marker and not (path / MARKER).is_file():
        return Verdict(path, "incomplete", f"no {MARKER} marker: the run died while saving", size)
    if not (path / MANIFEST).is_file():
        return Verdict(path, "damaged", f"no {MANIFEST}: its files cannot be checked", size)
    try:
        files = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError) as e:
        return Verdict(path, "damaged", f"{MANIFEST} is unreadable ({e})", size)
    for name, want in sorted(files.items()):
        if mine is not None and not mine(want.get("rank", writer_of(name))):
            continue
        f = path / name
        if not f.is_file():
            return Verdict(path, "damaged", f"{name} is missing", size)
        actual = f.stat().st_size
        if actual != want["size"]:
            return Verdict(path, "damaged", f"{name} is {actual:,} bytes, {want['size']:,} were written", size)
        if deep and size_and_crc32(f)["crc32"] != want["crc32"]:
            return Verdict(path, "damaged", f"{name} has CRC-32 {size_and_crc32(f)['crc32']}, {want['crc32']} was "
                                            "written", size)
    return Verdict(path, "complete", "", size)


def checkpoint_dirs(root: Path) -> list[Path]:
    if not Path(root).is_dir():
        return []
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name.startswith("step_"))


def survey(root: Path, *, deep: bool = True) -> list[Verdict]:
    """Every checkpoint under `root`, oldest first, with its state (what `medtrain checkpoints` lists)."""
    return [verify(d, deep=deep) for d in checkpoint_dirs(root)]


def listing(run_dir: Path, *, deep: bool = True) -> list[str]:
    """`medtrain checkpoints`: one line per checkpoint (step, size, state, why) and which one --resume picks;
    empty when there are none."""
    root = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    verdicts = survey(root, deep=deep)
    pick = next((v for v in reversed(verdicts) if v.usable), None)
    lines = [f"{v.path.name}  step {v.step:>7}  {v.size / 2**20:>10.1f} MiB  {v.state:<10}"
             f"{f'  ({v.reason})' if v.reason else ''}{'  <- --resume picks this' if v is pick else ''}"
             for v in verdicts]
    if verdicts and pick is None:
        lines.append("no usable checkpoint: --resume would start from step 0")
    return lines


def _skipped(v: Verdict) -> str:
    return f"ignoring {'incomplete' if v.state == 'incomplete' else 'damaged'} checkpoint {v.path}: {v.reason}"


def complete_checkpoints(root: Path, *, deep: bool = False) -> list[Path]:
    """Usable checkpoints, oldest first; incomplete and damaged ones are reported and skipped."""
    good = []
    for v in survey(root, deep=deep):
        if v.usable:
            good.append(v.path)
        else:
            log.warning(_skipped(v))
    return good


def newest_good(root: Path, *, deep: bool = True, say_skipped: bool = False) -> Path | None:
    """The checkpoint `--resume` picks: the newest that verifies. Checked from the newest down, so the older
    ones are not read (a 13B checkpoint is ~100 GB); with `say_skipped`, each one skipped is a warning."""
    for path in reversed(checkpoint_dirs(root)):
        v = verify(path, deep=deep)
        if v.usable:
            return path
        if say_skipped:
            log.warning(_skipped(v))
    return None
