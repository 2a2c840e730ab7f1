"""Outputs are written atomically: a writer killed at any point leaves nothing that looks
complete, and the next writer of the same path removes what it left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from vla_reference._fs import atomic_dir, remove_stale_siblings

REPO = Path(__file__).resolve().parents[2]

# a merge that stalls inside its temporary directory, so that it can be killed there
_STALLING_MERGE = """
import sys, time
from contextlib import contextmanager
from vla_reference._fs import atomic_dir as real

@contextmanager
def stalling(dst, **kw):
    with real(dst, **kw) as tmp:
        (tmp / "model.safetensors").write_bytes(b"half")
        print("inside", flush=True)
        time.sleep(60)
        yield tmp

import vla_reference.hf._checkpoint as writer
writer.atomic_dir = stalling  # the Hugging Face writer's
from vla_reference.cli import main
sys.exit(main(["-q", "merge", sys.argv[1], sys.argv[2]]))
"""


def test_a_killed_merge_leaves_nothing_complete_and_the_next_one_cleans_up(tmp_path):
    out = tmp_path / "merged"
    proc = subprocess.Popen(
        [sys.executable, "-c", _STALLING_MERGE, str(REPO / "golden/dense/checkpoint"), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "inside"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert not out.exists(), "a killed merge left something at its destination"
    assert len(left) == 1 and left[0].startswith(f".merged.tmp-{socket.gethostname()}-{proc.pid}-"), left
    done = subprocess.run(
        [sys.executable, "-m", "vla_reference.cli", "-q", "merge", str(REPO / "golden/dense/checkpoint"), str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"], "the stale temporary was not removed"
    assert (out / "config.json").is_file()


def test_a_live_or_foreign_writer_is_left_alone(tmp_path):
    dst = tmp_path / "out"
    live = tmp_path / f".out.tmp-{socket.gethostname()}-{os.getpid()}-abc"
    foreign = tmp_path / ".out.tmp-otherhost-1-abc"
    unrelated = tmp_path / ".outer.tmp-x"
    for p in (live, foreign, unrelated):
        p.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.old-{socket.gethostname()}-{dead.pid}"
    stale.mkdir()
    assert remove_stale_siblings(dst) == [stale]
    assert live.exists() and foreign.exists() and unrelated.exists() and not stale.exists()
    with atomic_dir(dst, fsync=False) as tmp:
        (tmp / "x").write_text("done")
    assert (dst / "x").read_text() == "done"
