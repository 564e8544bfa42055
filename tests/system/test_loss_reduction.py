"""Token-weighted loss under real ZeRO-3 accumulation on two ranks: the step's gradient equals one backward over
the whole global batch (every labelled token weighted alike), and the logged loss is its token-weighted mean;
loss_reduction micro_batch keeps the mean of micro-batch means (the paper's HF Trainer). The token launch also
steps over rows of packed documents (`packing: documents`), continual and SFT, against the same documents one
per sample."""

import json
import subprocess
from pathlib import Path

import pytest

from medtrain.launch.hostfile import read_hostfile
from medtrain.launch.launcher import LaunchSpec, build_command, free_port, launch_environment, write_env_file

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).resolve().parents[1] / "grad_probe.py"


_FOUND: dict[str, dict] = {}


def _probe(reduction: str, tmp_path: Path) -> dict:
    """The probe's findings for one reduction, launched once per session (the packing test reads the token one)."""
    if reduction not in _FOUND:
        _FOUND[reduction] = _launch(reduction, tmp_path)
    return _FOUND[reduction]


def _launch(reduction: str, tmp_path: Path) -> dict:
    out = tmp_path / "found.json"
    spec = LaunchSpec(pool=read_hostfile(REPO / "hostfiles/localhost"), hostfile=REPO / "hostfiles/localhost",
                      launcher="local", entry=["--no_local_rank", str(PROBE), str(out), reduction],
                      run_dir=tmp_path / "run", master_port=free_port(), env={})
    write_env_file(spec)
    proc = subprocess.run(build_command(spec), env=launch_environment(spec), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("reduction", ["token", "micro_batch"])
def test_the_accumulated_gradient_equals_one_big_batch_backward(reduction, tmp_path):
    found = _probe(reduction, tmp_path)
    print(f"FIGURE {reduction}: max |ZeRO-3 step gradient - big-batch gradient| = {found['max_abs_diff']:.2e} "
          f"(gradients up to {found['max_abs_grad']:.2e}); labelled tokens per micro-batch {found['labelled']}")
    assert len(set(found["labelled"])) > 1, "the micro-batches must differ in labelled tokens"
    assert found["max_abs_diff"] <= 1e-6 * max(1.0, found["max_abs_grad"]) + 1e-7
    assert abs(found["logged_loss"] - found["reference_loss"]) <= 1e-5
    # the two reductions differ on these batches, so matching one of them is a real check
    assert abs(found["other_reduction_loss"] - found["reference_loss"]) > 1e-3


@pytest.mark.parametrize("kind", ["continual", "sft"])
def test_a_packed_step_equals_the_same_documents_one_per_sample(kind, tmp_path):
    """Rows of several documents, positions restarting and attention inside each document: the same labelled
    tokens, the same token-weighted loss and the same gradient as the documents trained one per sample."""
    found = _probe("token", tmp_path)["packed"][kind]
    print(f"FIGURE packed {kind}: {found['documents']} documents per rank in {found['rows']} rows; loss "
          f"{found['logged_loss']:.6f} vs {found['reference_loss']:.6f}; max |gradient diff| "
          f"{found['max_abs_diff']:.2e} (gradients up to {found['max_abs_grad']:.2e})")
    assert found["rows"] < found["documents"]  # several documents share a row
    assert found["labelled"] == found["reference_labelled"]
    assert abs(found["logged_loss"] - found["reference_loss"]) <= 1e-5 * max(1.0, found["reference_loss"])
    assert found["max_abs_diff"] <= 1e-6 * max(1.0, found["max_abs_grad"]) + 1e-7
