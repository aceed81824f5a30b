"""`robostack demo` housekeeping: repeated demos keep a bounded number of replaced runs."""

from robostack.commands.demo import prune_replaced_runs


def test_demo_keeps_the_newest_replaced_runs_counting_the_one_it_replaces(tmp_path):
    names = [f"replaced-20261122-0{i}0000" for i in range(5)]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.csv").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")  # not a replaced run: never touched
    prune_replaced_runs(tmp_path, keep=3)  # no current run: three stay
    assert sorted(p.name for p in tmp_path.glob("replaced-*")) == names[2:]
    (tmp_path / "checkpoints").mkdir()  # a current run, about to be moved aside
    prune_replaced_runs(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.glob("replaced-*")) == names[3:]
    assert (tmp_path / "notes.txt").read_text() == "mine"
