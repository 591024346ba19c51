"""``rlopt report``: re-making a comparison's report from the runs on disk with another success threshold, which
folders it accepts, which settings it keeps, and its errors. Runs are written in-process by a fake trainer (as in
test_compare.py), so nothing trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlopt import runs
from rlopt.cli import main
from rlopt.compare import earlier_report_settings, run_name_for
from rlopt.report import load_runs, write_report

ENV_ID = "CartPole-v1"
STEPS = range(0, 1001, 200)
# eval/success_rate at STEPS per (algo, seed). grpo reaches 0.5 at 400 / 600 and 0.9 at 800 / 1000; ppo reaches
# 0.3 at 600 on both seeds and never 0.5, so each threshold gives its own per-seed values.
SUCCESS = {
    ("grpo", 0): [0.0, 0.3, 0.6, 0.8, 0.95, 1.0],
    ("grpo", 1): [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    ("ppo", 0): [0.0, 0.1, 0.2, 0.3, 0.4, 0.4],
    ("ppo", 1): [0.0, 0.1, 0.2, 0.3, 0.4, 0.4],
}
FINAL_REWARD = {"grpo": 10.0, "ppo": 5.0}


def write_fake_run(
    tb_dir: Path, algo: str, seed: int, success: list[float] | None = None, steps: range = STEPS
) -> None:
    """One finished run folder as a trainer leaves it: config.json, TensorBoard scalars and summary.json; its
    eval/success_rate at ``steps`` is ``success``, by default the run's row of SUCCESS."""
    from torch.utils.tensorboard import SummaryWriter

    success = SUCCESS[(algo, seed)] if success is None else success
    run_dir = tb_dir / run_name_for(ENV_ID, algo, seed)
    runs.write_json_atomic(
        run_dir / runs.CONFIG_FILE,
        {"algo": algo, "env_id": ENV_ID, "seed": seed, "config": {"total_steps": STEPS[-1]}, "versions": {}},
    )
    final = FINAL_REWARD[algo] + seed
    writer = SummaryWriter(log_dir=str(run_dir))
    for step, rate in zip(steps, success, strict=True):
        writer.add_scalar("eval/mean_reward", final * step / STEPS[-1], step)
        writer.add_scalar("eval/success_rate", rate, step)
        writer.add_scalar("train/loss", 1.0 / (1 + step), step)
    writer.close()
    summary = {
        "finished": True, "algo": algo, "env_id": ENV_ID, "seed": seed, "env_steps": STEPS[-1],
        "wall_clock_seconds": 2.0, "steps_per_second": STEPS[-1] / 2.0, "num_parameters": 100, "peak_rss_mb": 50.0,
        "eval/mean_reward": final, "eval/success_rate": success[-1], "eval/episodes": 4,
        "hyperparameters": {"lr": 0.001}, "baseline": "rlopt",
    }  # fmt: skip
    runs.write_json_atomic(run_dir / runs.SUMMARY_FILE, summary)


@pytest.fixture(scope="module")
def finished_comparison(tmp_path_factory) -> Path:
    """A comparison folder as `rlopt compare --out DIR --score eval/success_rate --reference-algo ppo` leaves it:
    DIR/tb/<run>/ and the report it wrote with the default threshold 0.9."""
    folder = tmp_path_factory.mktemp("finished") / "cmp"
    for algo, seed in SUCCESS:
        write_fake_run(folder / "tb", algo, seed)
    write_report(load_runs(folder / "tb", "eval/success_rate"), folder, 0.9, "ppo", reps=200)
    return folder


@pytest.fixture
def comparison(finished_comparison: Path, tmp_path: Path) -> Path:
    """A private copy of the finished comparison, for a test to re-make its report."""
    return Path(shutil.copytree(finished_comparison, tmp_path / "cmp"))


def _grpo_row(text: str) -> str:
    (row,) = [line for line in text.splitlines() if line.startswith("| grpo | rlopt (own) |")]
    return row


@pytest.mark.parametrize("which", ["comparison folder", "its tb folder"])
def test_report_replaces_the_comparison_report_with_the_new_threshold(comparison: Path, which: str, capsys):
    report = comparison / "report.md"
    before = report.read_text()
    assert "env steps to success ≥ 0.9 [per seed]" in before and "900 (2/2 seeds) [800, 1,000]" in _grpo_row(before)
    runs_dir = comparison if which == "comparison folder" else comparison / "tb"

    assert main(["report", str(runs_dir), "--success-threshold", "0.5"]) == 0

    text = report.read_text()
    assert "env steps to success ≥ 0.5 [per seed]" in text and "≥ 0.9" not in text
    assert "500 (2/2 seeds) [400, 600]" in _grpo_row(text)  # median, seeds reached, each seed's env steps
    assert "not reached (0/2 seeds) [–, –]" in text  # ppo never reaches 0.5
    # Settings not given are the earlier report's: ranked by success, P(ppo > grpo) rather than the reverse.
    assert "final success IQM" in text and "| ppo | grpo | 0.00 [0.00, 0.00] |" in text
    summary = runs.read_json(comparison / "summary.json")
    assert (summary["success_threshold"], summary["score"], summary["reference_algo"]) == (
        0.5,
        "eval/success_rate",
        "ppo",
    )
    assert [row["steps_to_threshold_per_seed"] for row in summary["table"]] == [[400.0, 600.0], [None, None]]
    assert (comparison / "plots" / "curves_CartPole-v1.png").is_file()
    assert not (comparison / "tb" / "report.md").exists()  # a tb/ folder's report goes where compare wrote it
    printed = capsys.readouterr().out
    assert "success threshold: 0.5 (given)" in printed
    assert f"reference algo: ppo (from {comparison / 'summary.json'})" in printed
    assert "steps to threshold" in printed and "500 (2/2 seeds) [400, 600]" in printed  # compare's table
    assert f"report: {report}" in printed


def test_report_to_another_folder_keeps_the_first_one(comparison: Path, tmp_path: Path, capsys):
    first = (comparison / "report.md").read_bytes()
    other = tmp_path / "at-0.3"
    argv = ["report", str(comparison), "--success-threshold", "0.3", "--score", "eval/mean_reward",
            "--reference-algo", "grpo", "--out", str(other)]  # fmt: skip

    assert main(argv) == 0

    assert (comparison / "report.md").read_bytes() == first
    text = (other / "report.md").read_text()
    assert "env steps to success ≥ 0.3 [per seed]" in text
    assert "300 (2/2 seeds) [200, 400]" in _grpo_row(text) and "600 (2/2 seeds) [600, 600]" in text  # ppo reaches it
    assert "final reward IQM" in text and "| grpo | ppo | 1.00 [1.00, 1.00] |" in text
    assert (other / "plots" / "final_scores.png").is_file()
    summary = runs.read_json(other / "summary.json")
    assert (summary["success_threshold"], summary["score"], summary["reference_algo"]) == (
        0.3,
        "eval/mean_reward",
        "grpo",
    )
    assert f"report: {other / 'report.md'}" in capsys.readouterr().out


def test_report_on_runs_without_an_earlier_report_uses_compare_defaults(finished_comparison: Path, tmp_path: Path):
    plain = Path(shutil.copytree(finished_comparison / "tb", tmp_path / "my-runs"))

    assert main(["report", str(plain)]) == 0

    text = (plain / "report.md").read_text()  # a folder of runs gets its report inside
    assert "env steps to success ≥ 0.9 [per seed]" in text and "900 (2/2 seeds) [800, 1,000]" in _grpo_row(text)
    assert "final reward IQM" in text and "| grpo | ppo | 1.00 [1.00, 1.00] |" in text
    assert len(load_runs(plain)) == 4  # the report's own files are not mistaken for runs


def test_a_success_gain_measures_each_run_from_its_own_start(tmp_path: Path, capsys):
    folder = tmp_path / "cmp"
    # grpo seed 0 starts at 0.5 and is 0.25 above it first at 600 (0.8), seed 1 starts at 0.1 and is at 400 (0.4);
    # ppo seed 0 starts at 0.3 and never gets to 0.55; ppo seed 1 was not evaluated at step 0
    write_fake_run(folder / "tb", "grpo", 0, [0.5, 0.6, 0.7, 0.8, 0.9, 0.9])
    write_fake_run(folder / "tb", "grpo", 1, [0.1, 0.2, 0.4, 0.5, 0.6, 0.7])
    write_fake_run(folder / "tb", "ppo", 0, [0.3, 0.4, 0.5, 0.5, 0.54, 0.5])
    write_fake_run(folder / "tb", "ppo", 1, [0.6, 0.7, 0.8, 0.9, 1.0], steps=range(200, 1001, 200))

    assert main(["report", str(folder), "--success-gain", "0.25"]) == 0

    text = (folder / "report.md").read_text()
    assert "env steps to success ≥ start + 0.25 [per seed]" in text
    assert "updates to success ≥ start + 0.25 [per seed]" in text
    assert "its own success at env step 0 (its `eval_on_start` evaluation) plus 0.25" in text
    assert "500 (2/2 seeds) [600, 400]" in _grpo_row(text)
    assert "3.5 (2/2 seeds) [4, 3]" in _grpo_row(text)  # updates: train/loss points up to 600 and 400
    assert "not reached (0/2 seeds, 1 without a step-0 evaluation) [–, –]" in text
    summary = runs.read_json(folder / "summary.json")
    assert (summary["success_gain"], summary["success_threshold"]) == (0.25, 0.9)
    grpo_starts, ppo_starts = (row["success_start_per_seed"] for row in summary["table"])
    assert grpo_starts == pytest.approx([0.5, 0.1]) and ppo_starts[0] == pytest.approx(0.3) and ppo_starts[1] is None
    assert "success gain: 0.25 (given)" in capsys.readouterr().out

    # An absolute threshold asked for sets the gain to 0 (the earlier report's gain would leave it unused) ...
    assert main(["report", str(folder), "--success-threshold", "0.5"]) == 0
    text = (folder / "report.md").read_text()
    assert "env steps to success ≥ 0.5 [per seed]" in text and "300 (2/2 seeds) [0, 600]" in _grpo_row(text)
    assert "success gain: 0.0 (--success-threshold given)" in capsys.readouterr().out
    # ... and a report made again without settings keeps both
    assert main(["report", str(folder)]) == 0
    summary = runs.read_json(folder / "summary.json")
    assert (summary["success_gain"], summary["success_threshold"]) == (0.0, 0.5)


def test_no_step_0_evaluation_anywhere(finished_comparison: Path, tmp_path: Path):
    folder = tmp_path / "late"
    for seed in range(2):
        write_fake_run(folder / "tb", "grpo", seed, [0.2, 0.9], steps=range(500, 1001, 500))
    assert main(["report", str(folder), "--success-gain", "0.1"]) == 0
    assert "n/a (no evaluation at step 0: train with eval_on_start)" in (folder / "report.md").read_text()


def test_earlier_report_settings(tmp_path: Path):
    assert earlier_report_settings(tmp_path) == {}
    runs.write_json_atomic(tmp_path / "summary.json", {"finished": True, "success_threshold": 0.5})  # one run's
    assert earlier_report_settings(tmp_path) == {}
    # A report written before summary.json recorded its score, with an invalid threshold.
    runs.write_json_atomic(tmp_path / "summary.json", {"table": [], "success_threshold": 7, "reference_algo": "ppo"})
    assert earlier_report_settings(tmp_path) == {"reference_algo": "ppo"}
    runs.write_json_atomic(
        tmp_path / "summary.json",
        {
            "table": [],
            "success_threshold": 0.55,
            "success_gain": 0.05,
            "score": "eval/success_rate",
            "reference_algo": "grpo@cot",
        },
    )
    assert earlier_report_settings(tmp_path) == {
        "success_threshold": 0.55,
        "success_gain": 0.05,
        "score": "eval/success_rate",
        "reference_algo": "grpo@cot",
    }
    (tmp_path / "summary.json").write_text("{cut short")
    assert earlier_report_settings(tmp_path) == {}


def test_an_older_report_without_its_score_gets_it_back_from_its_table(tmp_path: Path):
    def run(algo: str, reward: float, success: float, status: str = "finished") -> dict:
        summary = {"eval/mean_reward": reward, "eval/success_rate": success}
        return {"algo": algo, "env_id": "E", "status": status, "summary": summary}

    recorded = [run("grpo", 0.6, 0.5), run("grpo", 0.8, 0.7), run("ppo", 0.2, 0.1), run("ppo", 9.0, 9.0, "failed")]
    table = [{"algo": "grpo", "env_id": "E", "mean": 0.6}, {"algo": "ppo", "env_id": "E", "mean": 0.1}]
    runs.write_json_atomic(tmp_path / "summary.json", {"table": table, "runs": recorded, "reference_algo": "ppo"})
    assert earlier_report_settings(tmp_path) == {"score": "eval/success_rate", "reference_algo": "ppo"}
    table[1]["mean"] = 0.2  # grpo's row says success, ppo's says reward: neither fits every row
    runs.write_json_atomic(tmp_path / "summary.json", {"table": table, "runs": recorded})
    assert earlier_report_settings(tmp_path) == {}
    table[0]["mean"] = 0.7  # now reward fits both rows
    runs.write_json_atomic(tmp_path / "summary.json", {"table": table, "runs": recorded})
    assert earlier_report_settings(tmp_path) == {"score": "eval/mean_reward"}


# --- errors --------------------------------------------------------------------------------------------------------


def test_missing_folder_or_a_file(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--success-threshold", "0.5"]) == 2
    assert f"rlopt report: error: {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not runs")
    assert main(["report", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt is a file" in capsys.readouterr().err


def test_out_given_as_a_file(comparison: Path, tmp_path: Path, capsys):
    """--out names a folder: the comparison's own report.md given as --out (or a path under a file) is an error that
    says so, and the report there stays as it was."""
    report = comparison / "report.md"
    before = report.read_bytes()
    for out in (report, report / "again"):
        assert main(["report", str(comparison), "--out", str(out)]) == 2
        assert "report.md is a file; the report's --out is a folder" in capsys.readouterr().err
    assert report.read_bytes() == before
    arguments = ["compare", "--env", "CartPole-v1", "--algos", "grpo", "--seeds", "1", "--out", str(report)]
    assert main([*arguments, "--total-steps", "100"]) == 2
    assert "report.md is a file; --out is the comparison's folder" in capsys.readouterr().err


def test_folder_without_runs(finished_comparison: Path, tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    (empty / "some-folder").mkdir(parents=True)
    assert main(["report", str(empty), "--success-threshold", "0.5"]) == 2
    error = capsys.readouterr().err
    assert f"rlopt report: error: no runs found in {empty}: expected run folders such as CartPole-v1__grpo__0/" in error
    assert not (empty / "report.md").exists()
    one_run = finished_comparison / "tb" / run_name_for(ENV_ID, "grpo", 0)
    assert main(["report", str(one_run)]) == 2
    assert "looks like a single run's folder, so pass the folder above it" in capsys.readouterr().err


@pytest.mark.parametrize("threshold", ["nan", "inf", "-inf", "abc", "1.5", "-0.1"])
def test_threshold_must_be_a_finite_success_rate(comparison: Path, threshold: str, capsys):
    before = (comparison / "report.md").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(comparison), f"--success-threshold={threshold}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"expected a success rate from 0 to 1 such as 0.5, got '{threshold}'" in error
    assert (comparison / "report.md").read_bytes() == before


def test_unknown_reference_algo(comparison: Path, capsys):
    assert main(["report", str(comparison), "--reference-algo", "grop"]) == 2
    error = capsys.readouterr().err
    assert "reference algo 'grop' is not accepted; choose from grpo, ppo, sb3_ppo, distill or the runs'" in error
    assert "the runs' entries grpo, ppo" in error


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: rlopt report") and "--success-threshold RATE" in text and "--out DIR" in text
    assert "rlopt report runs/cmp --success-threshold 0.5 " in text  # the example
    assert main(["--help"]) == 0
    assert "report   write a comparison's report again" in capsys.readouterr().out


def test_repeated_seeds_and_mixed_budgets_are_flagged(finished_comparison: Path, tmp_path: Path):
    """A folder of repeated `rlopt train` runs: two grpo runs with seed 0 count as two seeds in the statistics, and
    the report says so, as it does for runs with different budgets; a clean comparison gets no caveat."""
    assert "Caveats" not in (finished_comparison / "report.md").read_text()
    folder = Path(shutil.copytree(finished_comparison / "tb", tmp_path / "tb"))
    duplicate = folder / "grpo-seed-0-again"
    shutil.copytree(folder / run_name_for(ENV_ID, "grpo", 0), duplicate)
    for run_dir, budget in (
        (folder / run_name_for(ENV_ID, "ppo", 0), 500),
        (folder / run_name_for(ENV_ID, "ppo", 1), 900),
    ):
        summary = runs.read_json(run_dir / runs.SUMMARY_FILE)
        summary["hyperparameters"]["total_steps"] = budget
        runs.write_json_atomic(run_dir / runs.SUMMARY_FILE, summary)
    write_report(load_runs(folder, "eval/success_rate"), tmp_path / "out", 0.9, "ppo", reps=50)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "seed(s) 0 appear more than once" in text and "grpo on `" in text
    assert "different budgets: 500, 900" in text
    assert len(runs.read_json(tmp_path / "out" / "summary.json")["caveats"]) == 2


def test_unequal_env_steps_between_algorithms_are_flagged(finished_comparison: Path, tmp_path: Path, capsys):
    """GRPO stops after a whole batch of groups, PPO after a whole rollout: with a small budget GRPO's last batch can
    overshoot it by a quarter. The table shows each algorithm's mean env steps, and a gap of more than 10% is a
    caveat, in report.md and on the terminal; a gap within 10% is not."""
    assert "| env steps trained (mean) |" in (finished_comparison / "report.md").read_text()
    assert "| 1,000 | 500 |" in _grpo_row((finished_comparison / "report.md").read_text())  # trained, steps/s
    folder = Path(shutil.copytree(finished_comparison, tmp_path / "cmp"))
    for seed, steps in ((0, 1100), (1, 1200)):  # grpo's mean: 1,150 against ppo's 1,000
        run_dir = folder / "tb" / run_name_for(ENV_ID, "grpo", seed)
        summary = runs.read_json(run_dir / runs.SUMMARY_FILE)
        summary["env_steps"] = steps
        runs.write_json_atomic(run_dir / runs.SUMMARY_FILE, summary)
    assert main(["report", str(folder)]) == 0
    text = (folder / "report.md").read_text()
    expected = "the algorithms trained for unequal numbers of env steps (mean per run: grpo 1,150, ppo 1,000)"
    assert expected in text and "| 1,150 |" in _grpo_row(text)
    assert f"caveat: on `{ENV_ID}` {expected}" in capsys.readouterr().out
    for seed in (0, 1):  # 1,050 against 1,000: within 10%
        run_dir = folder / "tb" / run_name_for(ENV_ID, "grpo", seed)
        summary = runs.read_json(run_dir / runs.SUMMARY_FILE)
        summary["env_steps"] = 1050
        runs.write_json_atomic(run_dir / runs.SUMMARY_FILE, summary)
    assert main(["report", str(folder)]) == 0
    assert "unequal numbers" not in (folder / "report.md").read_text() and "caveat" not in capsys.readouterr().out
