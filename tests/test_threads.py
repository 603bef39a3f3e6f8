"""Thread counts: one torch thread per free core by default, the user's choice kept, the choice recorded."""
from __future__ import annotations

import pytest
import torch
import yaml

from spgd import threads
from spgd.cli import main


@pytest.fixture
def spgd_chooses(monkeypatch):
    """No OMP_NUM_THREADS, torch at spgd's expected count, fresh module state; torch's count restored after."""
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_state", {"chosen": None, "how": "torch's default", "last": None})
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def readings(monkeypatch, *snapshots):
    """Make /proc/stat readings (wall s, machine busy CPU s, own CPU s, cores) come in this order."""
    queue = list(snapshots)
    monkeypatch.setattr(threads, "_snapshot", lambda: queue.pop(0))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)


@pytest.mark.parametrize("busy_then, own_then, expected_busy, expected_threads", [
    (100.0, 0.0, 0.0, 2),   # idle machine
    (101.0, 0.0, 1.0, 1),   # another program on one core
    (101.9, 1.9, 0.0, 2),   # only this process was busy: its own time is not someone else's load
    (100.6, 0.0, 0.6, 1),   # a core 60% taken is not free (FREE_ENOUGH = 0.7)
    (100.2, 0.0, 0.2, 2),   # 20% is
    (102.0, 0.0, 2.0, 1),   # all cores busy: still one thread
])
def test_threads_follow_the_cores_other_programs_leave_free(spgd_chooses, monkeypatch, busy_then, own_then,
                                                            expected_busy, expected_threads):
    readings(monkeypatch, (0.0, 100.0, 0.0, 2), (1.0, busy_then, own_then, 2))
    assert threads.set_threads(None) == expected_threads == torch.get_num_threads()
    assert threads.describe()["chosen_by"] == f"free cores ({expected_threads} of 2)"


def test_later_readings_measure_the_time_since_the_last_one(spgd_chooses, monkeypatch):
    readings(monkeypatch, (0.0, 0.0, 0.0, 2), (1.0, 1.0, 0.0, 2), (11.0, 21.0, 20.0, 2))
    assert threads.set_threads(None) == 1          # one busy core over the first second
    assert threads.adapt() == 2                    # then 10 s in which only this process worked (2 threads)


def test_the_users_count_is_kept(spgd_chooses, monkeypatch):
    readings(monkeypatch, *[(float(i), 100.0 + i, 0.0, 2) for i in range(4)])  # a busy core throughout
    assert threads.set_threads(2) == 2 and threads.adapt() == 2                     # --threads 2
    assert threads.describe()["chosen_by"] == "--threads"
    monkeypatch.setattr(threads, "_state", {"chosen": None, "how": "torch's default", "last": None})
    torch.set_num_threads(3)                                                     # set by the user before spgd
    assert threads.set_threads(None) == 3 and threads.describe()["chosen_by"] == "torch.set_num_threads"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.set_threads(None) == 3 and threads.describe()["chosen_by"] == "OMP_NUM_THREADS"
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        threads.set_threads(0)


def test_a_real_reading_is_a_core_count():
    busy = threads.busy_cores()
    assert busy is not None and 0.0 <= busy <= threads.os.cpu_count()


def test_the_choice_is_printed_and_recorded_in_config_yaml(tiny_prior_path, tmp_path, capsys):
    from .conftest import write_face_like

    face = write_face_like(tmp_path / "face.png")
    assert main(["restore", "-t", "super_resolution", "--simulate", "-i", str(face), "-m", str(tiny_prior_path),
                 "--steps", "2", "--threads", "1", "-o", str(tmp_path / "out")]) == 0
    assert "spgd: threads: 1 CPU thread(s), chosen by --threads" in capsys.readouterr().err
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert config["cpu_threads"]["threads"] == 1 and config["cpu_threads"]["chosen_by"] == "--threads"
