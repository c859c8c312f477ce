"""Lanes of tool steps side by side (the demo's scheduler): overlap, logs, failure and stop."""

from __future__ import annotations

import sys

import pytest

from voxseg.lanes import Lanes, StepFailed, last_lines, last_progress


def script(tmp_path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return str(path)


def test_lanes_run_side_by_side_each_in_order_with_its_output_in_a_log(tmp_path, capsys):
    # each step waits until the other lane's step has started: only side-by-side lanes finish
    wait_for = """import pathlib, sys, time
pathlib.Path(sys.argv[1]).touch()
deadline = time.time() + 60
while not pathlib.Path(sys.argv[2]).exists():
    assert time.time() < deadline, "the other lane never started"
    time.sleep(0.05)
print("progress 1/2\\rprogress 2/2")
print("table of", sys.argv[1])
"""
    waiter = script(tmp_path, "wait_for", wait_for)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    lanes = Lanes(tmp_path / "logs", tmp_path, heartbeat=0.2)

    def lane_a():
        lanes.step("left", "a waits for b", [waiter, a, b], show=True)
        lanes.step("left", "then a quick one", ["-c", "print(0 and 1 or 'quiet')"])
        return "A"

    results = lanes.run({"left": lane_a, "right": lambda: lanes.step("right", "b waits for a", [waiter, b, a])})
    assert results == {"left": "A", "right": None}
    titles = [t.title for t in sorted(lanes.times, key=lambda t: t.start_s)]
    assert titles[2] == "then a quick one" and set(titles[:2]) == {"a waits for b", "b waits for a"}
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert logs == ["01_left.log", "02_right.log", "03_left.log"] or logs == ["01_right.log", "02_left.log",
                                                                               "03_left.log"]
    assert (tmp_path / "logs" / "03_left.log").read_text() == "quiet\n"
    printed = capsys.readouterr().out
    assert f"table of {a}" in printed  # shown
    assert f"table of {b}" not in printed and "\nquiet\n" not in printed  # left in their logs
    assert "$ python -c 'print(0 and 1 or '\"'\"'quiet'\"'\"')'" in printed  # each command, shell-quoted
    summary = lanes.summary()
    assert all(title in summary for title in titles) and "s wall for" in summary


def test_a_failed_step_stops_the_other_lane_and_names_its_log(tmp_path, capsys):
    fail = script(tmp_path, "fail", "print('bad input: x.bin')\nraise SystemExit(3)\n")
    # the other lane's step exits cleanly on Ctrl-C (as the tools do), leaving a mark
    long_step = script(tmp_path, "long_step", f"""import pathlib, signal, sys, time
def stop(*_):
    pathlib.Path({str(tmp_path / 'stopped')!r}).touch()
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
pathlib.Path({str(tmp_path / 'started')!r}).touch()
time.sleep(60)
""")
    started = tmp_path / "started"
    wait = script(tmp_path, "wait", f"""import pathlib, time
while not pathlib.Path({str(started)!r}).exists():
    time.sleep(0.05)
""")
    lanes = Lanes(tmp_path / "logs", tmp_path, heartbeat=0.2)

    def failing():
        lanes.step("one", "wait for the other", [wait])
        lanes.step("one", "a failing step", [fail])

    def long_lane():
        lanes.step("two", "a long step", [long_step])
        lanes.step("two", "never started", ["-c", f"open({str(tmp_path / 'ran')!r}, 'w')"])

    with pytest.raises(StepFailed, match=r"step failed \(a failing step\); its log: .*03_one\.log"):
        lanes.run({"one": failing, "two": long_lane})
    assert (tmp_path / "stopped").exists()  # the running step got Ctrl-C
    assert not (tmp_path / "ran").exists()  # and its lane started nothing after it
    printed = capsys.readouterr().out
    assert "a failing step: FAILED (exit 3)" in printed and "bad input: x.bin" in printed


def test_log_helpers_keep_a_progress_bars_last_state(tmp_path):
    assert last_lines("start\nbar 1%\rbar 50%\rbar 100%\n\nend\n", 2) == ["bar 100%", "end"]
    log = tmp_path / "x.log"
    assert last_progress(log) == "starting"
    log.write_text("loading\ntrain: 10%|#  | 3/30\rtrain: 20%|## | 6/30\r")
    assert last_progress(log) == "train: 20%|## | 6/30"


def test_steps_run_with_this_python(tmp_path, capsys):
    lanes = Lanes(tmp_path / "logs", tmp_path)
    lanes.run({"only": lambda: lanes.step("only", "which python", ["-c", "import sys; print(sys.executable)"],
                                          show=True)})
    assert sys.executable in capsys.readouterr().out
