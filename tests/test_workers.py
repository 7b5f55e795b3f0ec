"""Worker processes started early (``EarlyWorkers``): errors of the caller's own set-up and of
the workers surface as themselves, work handed out runs, and the caller's share runs here."""

import pytest

from denoised_weights.core.errors import DnwError
from denoised_weights.core.workers import EarlyWorkers


def write_file(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def fail(_: str) -> None:
    raise SystemExit(3)


def test_work_handed_out_runs_and_the_callers_share_runs_here(tmp_path):
    with EarlyWorkers(write_file, 3, "test", first_number=1) as workers:
        result = workers.run(
            [(str(tmp_path / f"w{i}"), f"job {i}") for i in range(2)], local=lambda: "mine"
        )
    assert result == "mine"
    assert sorted(p.read_text() for p in tmp_path.iterdir()) == ["job 0", "job 1"]


def test_an_error_before_the_work_is_handed_out_is_the_error_raised():
    for _ in range(3):  # the workers may or may not have started reading: never a broken pipe
        with (
            pytest.raises(DnwError, match="the base does not fit"),
            EarlyWorkers(write_file, 2, "test"),
        ):
            raise DnwError("the base does not fit")


def test_failed_workers_are_named_after_the_callers_share_is_done():
    done = []
    with (
        pytest.raises(DnwError, match=r"test worker\(s\) \[1\] failed; rerun"),
        EarlyWorkers(fail, 2, "test", first_number=1) as workers,
    ):
        workers.run([("a",)], local=lambda: done.append(True))
    assert done == [True]
