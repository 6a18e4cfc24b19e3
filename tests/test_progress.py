"""Progress where there is no terminal: timed lines with an ETA, for training and caches."""

from __future__ import annotations

import torch

from medxfer import progress as P
from medxfer.data.datasets import cached_dataset


class FakeClock:
    """A monotonic clock that moves only when told to (``step`` seconds per reading)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_lines_come_every_interval_with_the_count_and_an_eta():
    clock, lines = FakeClock(), []
    report = P.ProgressLines("epoch 1/5", 400, clock=clock, write=lines.append)
    for step in range(400):
        clock.now += 0.25  # a step takes 0.25 s: 100 s in all
        report.advance(lambda: "loss 0.5000")
    assert len(lines) == 3  # after 30, 60 and 90 s, never more often
    assert lines[0] == ("epoch 1/5: 120/400 steps (30%), loss 0.5000, 30 s elapsed, "
                        "ETA 1 min 10 s")
    assert lines[-1].startswith("epoch 1/5: 360/400 steps (90%)") and "ETA 10 s" in lines[-1]


def test_a_fast_loop_prints_nothing_and_the_note_is_not_read():
    clock, lines = FakeClock(step=0.01), []
    report = P.ProgressLines("epoch 1/5", 50, clock=clock, write=lines.append)

    def note():
        raise AssertionError("the note (a device sync) is read only for a line")

    for _ in range(50):
        report.advance(note)
    report.finish("validating")
    assert lines == []


def test_a_slow_first_step_is_reported_and_the_next_phase_named():
    """One line at least every 30 s: a 45 s step gets its line as soon as it ends."""
    clock, lines = FakeClock(), []
    report = P.ProgressLines("epoch 1/2", 3, clock=clock, write=lines.append)
    clock.now += 45
    report.advance()
    assert lines == ["epoch 1/2: 1/3 steps (33%), 45 s elapsed, ETA 1 min 30 s"]
    clock.now += 2
    report.advance()
    report.advance()
    report.finish("validating")
    assert lines[-1] == "epoch 1/2: 3/3 steps done in 47 s; validating"


def test_durations_read_as_people_write_them():
    assert [P.format_duration(s) for s in (0, 42.4, 65, 3600 + 7 * 60 + 5)] == \
        ["0 s", "42 s", "1 min 05 s", "1 h 07 min"]
    assert P.format_duration(float("inf")) == "?"


def test_progress_prints_lines_to_a_log_file_not_a_bar(monkeypatch, capsys):
    clock = FakeClock(step=31.0)  # every reading is 31 s later: every step gets a line
    monkeypatch.setattr(P, "monotonic", clock)
    with P.progress("caching 3 cases", 3, unit="cases", next_step="training") as advance:
        for _ in range(3):
            advance()
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("caching 3 cases: 1/3 cases (33%), 31 s elapsed, ETA 1 min 02 s")
    assert err[-1].startswith("caching 3 cases: 3/3 cases done in") and "training" in err[-1]


def test_disabled_progress_and_announced_loops_outside_a_run_are_silent(monkeypatch, capsys):
    monkeypatch.setattr(P, "monotonic", FakeClock(step=31.0))
    with P.progress("epoch 1/1", 3, enabled=False) as advance:
        advance()
    with P.announced("caching 3 cases", 3) as advance:  # not inside reporting(True)
        advance()
    assert capsys.readouterr().err == ""
    with P.reporting(True):
        assert P.reporting_enabled()
        with P.announced("caching 3 cases", 3) as advance:
            advance()
    assert not P.reporting_enabled()
    assert "caching 3 cases: 1/3 cases" in capsys.readouterr().err


def test_a_cache_that_fills_slowly_reports_its_progress(monkeypatch, capsys):
    monkeypatch.setattr(P, "monotonic", FakeClock(step=31.0))
    cases = [{"image": torch.full((1, 4, 4), float(i)), "label": i} for i in range(3)]
    with P.reporting(True):
        dataset = cached_dataset(cases, lambda item: item, cache="memory", cache_dir=None,
                                 key={})
    assert len(dataset) == 3 and float(dataset[2]["image"][0, 0, 0]) == 2.0
    err = capsys.readouterr().err
    assert "caching 3 cases: 1/3 cases (33%)" in err and "caching 3 cases: 3/3 cases" in err
