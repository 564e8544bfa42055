from pathlib import Path

import pytest
from deepspeed.launcher.runner import fetch_hostfile
from typer.testing import CliRunner

from medtrain.cli import app
from medtrain.launch.hostfile import HostfileError, parse_hostfile_text, read_hostfile, render_hostfile

REPO = Path(__file__).resolve().parents[2]

VALID = [
    "node01 slots=6\nnode02 slots=6\n",
    "# comment\n\n10.0.0.1 slots=8\n  10.0.0.2   slots=8  \n",
    "gpu-a.cluster.local slots=1\n# trailing comment\n",
    "localhost slots=2\n",
]


@pytest.mark.parametrize("text", VALID)
def test_parser_equals_deepspeed_fetch_hostfile_on_valid_files(tmp_path, text):
    p = tmp_path / "hosts"
    p.write_text(text)
    assert read_hostfile(p) == fetch_hostfile(str(p))


@pytest.mark.parametrize("path", ["hostfiles/v100x20", "hostfiles/localhost"])
def test_checked_in_hostfiles_agree_with_deepspeed(path):
    assert read_hostfile(REPO / path) == fetch_hostfile(str(REPO / path))


def test_v100x20_has_120_slots_and_regenerates_identically():
    pool = read_hostfile(REPO / "hostfiles/v100x20")
    assert len(pool) == 20 and set(pool.values()) == {6} and sum(pool.values()) == 120
    assert render_hostfile(20, 6, "node") == (REPO / "hostfiles/v100x20").read_text()


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("node1 slots=6\nnode2;rm -rf / slots=6\n", r"h:2: 'node2;rm' is not a valid hostname"),
        ("node1 slots=6\n$(reboot) slots=6\n", r"h:2: '\$\(reboot\)' is not a valid hostname"),
        ("node1 slots=0\n", r"h:1: slots=0 must be a positive integer"),
        ("node1 slots=-2\n", r"h:1: slots=-2 must be a positive integer"),
        ("node1 slots=6\n# x\nnode1 slots=6\n", r"h:3: host 'node1' already listed on line 1"),
        ("node1\n", r"h:1: expected 'node1 slots=N'"),
        ("node1 slots=6 extra\n", r"h:1: expected 'node1 slots=N'"),
        ("999.1.1.1 slots=1\n", r"h:1: '999.1.1.1' is not a valid"),
        ("-node slots=1\n", r"h:1: '-node' is not a valid"),
        ("# only comments\n\n", r"h: no hosts"),
    ],
)
def test_bad_hostfiles_name_file_line_and_fix(text, pattern):
    with pytest.raises(HostfileError, match=pattern):
        parse_hostfile_text(text, source="h")


def test_hostfile_command_writes_and_refuses_bad_prefix(tmp_path):
    runner = CliRunner()
    out = tmp_path / "hf"
    r = runner.invoke(app, ["hostfile", "--nodes", "3", "--slots", "2", "--prefix", "gpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert list(read_hostfile(out)) == ["gpu01", "gpu02", "gpu03"]
    args = ["hostfile", "--nodes", "2", "--slots", "2", "--prefix", "a;b", "--out", str(tmp_path / "x")]
    bad = runner.invoke(app, args)
    assert bad.exit_code == 2 and "invalid hostnames" in bad.output
    assert not (tmp_path / "x").exists()
