"""export and sweep on a disk too small for a model (a real tmpfs): exit 2, one line naming the mount and the
room a model needs, no staging folder left (a sweep keeps its cell records: it resumes)."""

from train_fixtures import REPO, SFT_RECIPE, cli, small_disk

from medtrain.data_prep.samples import DIR as SAMPLES


def staging_left(root):
    return [str(p) for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


def test_export_and_sweep_on_a_full_disk_are_one_line_and_leave_no_staging(continual_run, tmp_path):
    with small_disk(tmp_path / "small", "64k") as disk:
        r = cli("export", "--checkpoint", str(continual_run), "--out", str(disk / "model"))
        assert r.returncode == 2, r.stderr[-3000:]
        assert r.stderr.count("error:") == 1 and str(disk) in r.stderr and "needs about" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and list(disk.iterdir()) == []
        r = cli("sweep", "--continual", str(continual_run), "--sft-recipe", str(REPO / SFT_RECIPE), "--checkpoints",
                "8", "--hosts", str(REPO / "hostfiles" / "localhost"), "--launcher", "local", "--out",
                str(disk / "sweep"), "--cmexam-data", str(SAMPLES / "cmexam_test.csv"), "--mmlu-data",
                str(SAMPLES / "mmlu"), "--cmmlu-data", str(SAMPLES / "cmmlu"))
        assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-3000:])
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(disk) in errors[0] and "Traceback" not in r.stderr, r.stderr
        assert staging_left(disk) == []
