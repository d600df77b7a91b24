"""Interrupted runs: finished frames kept, ``--resume`` gives the uninterrupted file byte for byte,
existing outputs refused without ``--overwrite``, write errors reported with what was kept."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from backmap_plugin.api import backmap
from backmap_plugin.cli.command import main
from backmap_plugin.core.errors import BackmapInputError, BackmapOutputError
from backmap_plugin.io.mdtraj_formats import MdtrajBackend
from backmap_plugin.io.pdb import PdbBackend
from backmap_plugin.io.progress import record_path
from backmap_plugin.io.trajectory import TrajectoryWriter

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_PDB = EXAMPLES / "trpcage_ca.pdb"
EXAMPLE_DCD = EXAMPLES / "trpcage_ca.dcd"
CHUNK = 4


@pytest.fixture(scope="module")
def long_dcd(tmp_path_factory) -> Path:
    """The shipped CA example tiled to 1,500 frames (with a little noise so frames differ): a run that
    lasts long enough to be stopped in the middle."""
    traj = md.load(str(EXAMPLE_DCD), top=str(EXAMPLE_PDB))
    xyz = np.concatenate([traj.xyz] * 40)[:1500]
    xyz = xyz + np.random.default_rng(0).normal(0.0, 0.005, xyz.shape).astype(np.float32)
    path = tmp_path_factory.mktemp("long") / "long_ca.dcd"
    md.Trajectory(xyz, traj.topology).save_dcd(str(path))
    return path


class _Interrupt:
    """Makes the n-th ``TrajectoryWriter.write`` raise (what Ctrl-C does between two chunks)."""

    def __init__(self, monkeypatch, after_calls: int, exc: BaseException):
        self.calls, self.after, self.exc = 0, after_calls, exc
        original = TrajectoryWriter.write

        def write(writer, xyz, **frames):
            self.calls += 1
            if self.calls > self.after:
                raise self.exc
            return original(writer, xyz, **frames)

        monkeypatch.setattr(TrajectoryWriter, "write", write)


def _content(path: Path) -> bytes:
    """The bytes of a file; for DCD without the title block, which holds the creation time (and, from the
    DCD plugin, uninitialised bytes), so two uninterrupted runs differ there too."""
    data = path.read_bytes()
    if path.suffix != ".dcd":
        return data
    title_end = 92 + 4 + int.from_bytes(data[92:96], sys.byteorder) + 4
    return data[:92] + data[title_end:]


def _run(source, out, **kwargs):
    top = None if str(source).endswith(".pdb") else str(EXAMPLE_PDB)
    return backmap(str(source), str(out), top=top, chunk=CHUNK, progress=False, **kwargs)


@pytest.mark.parametrize("ext", [".pdb", ".xtc", ".dcd", ".cif"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, ext):
    """Ctrl-C after 3 chunks, then ``resume=True``: the same bytes as one uninterrupted run (model, 2 samples)."""
    options = {"samples": 2, "seed": 7, "stride": 3}  # 13 frames: chunks of 4, 4, 4, 1
    (tmp_path / "whole").mkdir()
    whole = tmp_path / "whole" / f"out{ext}"  # same name: mmCIF files name their data block after it
    uninterrupted = _run(EXAMPLE_DCD, whole, **options)

    out = tmp_path / f"out{ext}"
    with monkeypatch.context() as patch:
        _Interrupt(patch, 3, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            _run(EXAMPLE_DCD, out, **options)
    assert not out.exists()
    record = json.loads(Path(record_path(out)).read_text())
    assert record["frames_done"] == 3 * CHUNK and record["structures_written"] == 3 * CHUNK * 2
    partial = tmp_path / f".out{ext}.partial{ext}"
    assert partial.exists()

    result = _run(EXAMPLE_DCD, out, resume=True, **options)
    assert result.resumed_from == 3 * CHUNK and result.n_frames == 13
    per = float(result.summary().split("(")[-1].split(" ms")[0])  # per structure built by this call: 1 frame x 2
    assert per == pytest.approx(1000.0 * result.seconds / 2, abs=0.051)
    assert _content(out) == _content(whole)
    assert not Path(record_path(out)).exists() and not partial.exists()
    # the summary is of every frame (its bead RMSD was of the resumed run's last frame alone)
    for kind, figures in uninterrupted.bead_rmsd.items():
        for key in ("median", "max"):
            assert result.bead_rmsd[kind][key] == pytest.approx(figures[key], abs=1e-4), (kind, key)
        assert result.bead_rmsd[kind]["worst_frame"] == figures["worst_frame"]


@pytest.mark.parametrize("ext", [".pdb", ".cif"])
def test_resume_keeps_the_boxes_and_disulfide_records(tmp_path, monkeypatch, ext):
    """A trace of 6B0S (two disulfides) in a box that grows frame by frame: the text outputs carry SSBOND / CONECT or
    struct_conn, and CRYST1 per model or the first frame's _cell, and an interrupted run resumed gives the file an
    uninterrupted one writes, byte for byte (the resumed mmCIF took its _cell from the first frame it wrote)."""
    aa = md.load(str(Path(__file__).resolve().parent / "data" / "martini3" / "aa.pdb.gz"))
    ca = aa.atom_slice(aa.topology.select("name CA"))
    noise = np.random.default_rng(0).normal(0.0, 0.01, (12, ca.n_atoms, 3)).astype(np.float32)
    lengths = np.repeat(np.linspace(9.0, 9.5, 12)[:, None], 3, axis=1)
    traj = md.Trajectory(ca.xyz + noise, ca.topology, unitcell_lengths=lengths, unitcell_angles=np.full((12, 3), 90.0))
    traj[0].save_pdb(str(tmp_path / "top.pdb"))
    traj.save_dcd(str(tmp_path / "in.dcd"))
    run = dict(top=str(tmp_path / "top.pdb"), chunk=4, progress=False)
    whole, out = tmp_path / f"whole{ext}", tmp_path / "part" / f"whole{ext}"
    out.parent.mkdir()
    backmap(str(tmp_path / "in.dcd"), str(whole), **run)
    with monkeypatch.context() as patch:
        _Interrupt(patch, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            backmap(str(tmp_path / "in.dcd"), str(out), **run)
    assert backmap(str(tmp_path / "in.dcd"), str(out), resume=True, **run).resumed_from == 4
    text = whole.read_text()
    assert out.read_text() == text
    if ext == ".pdb":
        assert text.count("SSBOND") == 2 and text.count("CONECT") == 4 and text.count("CRYST1") == 12
        assert text.splitlines()[2].startswith("CRYST1   90.000   90.000   90.000")
    else:
        assert text.count(" disulf ") == 2 and "_cell.length_a 90.000\n" in text


def test_resume_h5_gives_the_same_frames(tmp_path, monkeypatch):
    whole = tmp_path / "whole.h5"
    _run(EXAMPLE_DCD, whole)
    out = tmp_path / "out.h5"
    with monkeypatch.context() as patch:
        _Interrupt(patch, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            _run(EXAMPLE_DCD, out)
    _run(EXAMPLE_DCD, out, resume=True)
    a, b = md.load(str(whole)), md.load(str(out))
    assert a.n_frames == b.n_frames == 38
    np.testing.assert_array_equal(a.xyz, b.xyz)


def test_pdb_with_one_kept_frame_starts_over(tmp_path, monkeypatch):
    """A PDB partial with a single model cannot be continued (MODEL records); the run restarts at frame 0."""
    whole = tmp_path / "whole.pdb"
    backmap(str(EXAMPLE_DCD), str(whole), top=str(EXAMPLE_PDB), chunk=1, stride=10, progress=False)
    out = tmp_path / "out.pdb"
    with monkeypatch.context() as patch:
        _Interrupt(patch, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            backmap(str(EXAMPLE_DCD), str(out), top=str(EXAMPLE_PDB), chunk=1, stride=10, progress=False)
    result = backmap(str(EXAMPLE_DCD), str(out), top=str(EXAMPLE_PDB), chunk=1, stride=10, progress=False,
                     resume=True)
    assert result.resumed_from == 0
    assert out.read_bytes() == whole.read_bytes()


def test_resume_refuses_other_settings(tmp_path, monkeypatch):
    out = tmp_path / "out.xtc"
    with monkeypatch.context() as patch:
        _Interrupt(patch, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            _run(EXAMPLE_DCD, out, seed=1)
    with pytest.raises(BackmapInputError, match="seed = 1.*this one 2"):
        _run(EXAMPLE_DCD, out, seed=2, resume=True)
    # without --resume or --overwrite the unfinished run is not thrown away
    with pytest.raises(BackmapInputError, match="unfinished run.*pass resume=True to continue it or overwrite=True"):
        _run(EXAMPLE_DCD, out, seed=1, overwrite=False)
    # --overwrite starts over
    result = _run(EXAMPLE_DCD, out, seed=2, overwrite=True)
    assert result.resumed_from == 0 and result.n_frames == 38
    assert not Path(record_path(out)).exists()
    # an input that grew since (a simulation still writing it): said in words (it was the record's dicts)
    grown = tmp_path / "grown.dcd"
    grown.write_bytes(EXAMPLE_DCD.read_bytes())
    with monkeypatch.context() as patch:
        _Interrupt(patch, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            _run(grown, out, overwrite=True)
    with grown.open("ab") as handle:
        handle.write(bytes(10))
    size = grown.stat().st_size
    with pytest.raises(BackmapInputError, match=rf"cannot resume: the input file {grown} changed since the "
                                                rf"unfinished run \(size {size - 10} -> {size} bytes, modified since"):
        _run(grown, out, resume=True)


def test_resume_takes_a_default_given_as_the_same(tmp_path, monkeypatch):
    """A run left with the defaults resumes when the defaults are given by name (--method model, --temperature 0:
    it was refused, "the unfinished run used method = None, this one 'model'", and --resume --overwrite started
    over); other values are still refused."""
    out = tmp_path / "out.xtc"
    with monkeypatch.context() as patch:
        _Interrupt(patch, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            _run(EXAMPLE_DCD, out)
    result = _run(EXAMPLE_DCD, out, method="model", temperature=0.0, resume=True)
    assert result.resumed_from > 0 and result.n_frames == 38
    with monkeypatch.context() as patch:
        _Interrupt(patch, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            _run(EXAMPLE_DCD, out, overwrite=True)
    with pytest.raises(BackmapInputError, match="temperature = 0.0.*this one 0.5"):
        _run(EXAMPLE_DCD, out, temperature=0.5, resume=True)


def test_resume_without_unfinished_run(tmp_path):
    out = tmp_path / "out.pdb"
    result = _run(EXAMPLE_PDB, out, resume=True)  # nothing to resume: a normal run
    assert result.resumed_from == 0 and out.exists()
    with pytest.raises(BackmapInputError, match="nothing to resume"):
        _run(EXAMPLE_PDB, out, resume=True)


def test_resume_with_overwrite_continues_or_starts_over(tmp_path, monkeypatch):
    """--resume --overwrite (the workflow's call): continue with the same settings, else start over; never refuse."""
    out = tmp_path / "out.xtc"
    reference = tmp_path / "reference.xtc"
    _run(EXAMPLE_DCD, reference, seed=1)
    for seed in (1, 2):
        with monkeypatch.context() as patch:
            _Interrupt(patch, 1, KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                _run(EXAMPLE_DCD, out, seed=1, overwrite=True)
        result = _run(EXAMPLE_DCD, out, seed=seed, resume=True, overwrite=True)
        assert result.n_frames == 38 and not Path(record_path(out)).exists()
        if seed == 1:  # same settings: continued, to the uninterrupted file
            assert result.resumed_from > 0 and _content(out) == _content(reference)
        else:  # other settings: started over
            assert result.resumed_from == 0
    # a complete output is replaced
    assert _run(EXAMPLE_DCD, out, seed=2, resume=True, overwrite=True).resumed_from == 0
    # a progress record whose partial file is gone (a scratch cleaner, a duplicate job): started over, with a note
    # (every retry failed: "cannot resume: partial file ... is unreadable")
    with monkeypatch.context() as patch:
        _Interrupt(patch, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            _run(EXAMPLE_DCD, out, seed=1, overwrite=True)
    os.remove(tmp_path / ".out.xtc.partial.xtc")
    result = _run(EXAMPLE_DCD, out, seed=1, resume=True, overwrite=True)
    assert result.resumed_from == 0 and _content(out) == _content(reference)
    assert any("cannot resume" in line and line.endswith("started over, as overwrite=True says")
               for line in result.report)
    with pytest.raises(BackmapInputError, match="nothing to resume"):
        _run(EXAMPLE_DCD, out, seed=1, resume=True)


def test_cli_refuses_existing_output_unless_overwrite(tmp_path, capfd):
    """An existing output is refused; the command names its option, the Python API its keyword (both said "pass
    overwrite=True (--overwrite)"), as for an unfinished run."""
    out = tmp_path / "out.pdb"
    out.write_text("previous result\n")
    status = main(["run", str(EXAMPLE_PDB), "-o", str(out), "--quiet"])
    err = capfd.readouterr().err
    assert status == 2 and err.strip().endswith(f"{out}: output file exists; pass --overwrite to replace it")
    with pytest.raises(BackmapInputError, match=r"out.pdb: output file exists; pass overwrite=True to replace it$"):
        backmap(str(EXAMPLE_PDB), str(out), overwrite=False, progress=False)
    assert out.read_text() == "previous result\n"
    Path(record_path(out)).write_text("{}")  # (an unfinished run's)
    assert main(["run", str(EXAMPLE_PDB), "-o", str(out), "--quiet"]) == 2
    assert "pass --resume to continue it or --overwrite to start over" in capfd.readouterr().err
    os.remove(record_path(out))
    assert main(["run", str(EXAMPLE_PDB), "-o", str(out), "--quiet", "--overwrite"]) == 0
    assert md.load(str(out)).n_atoms == 154


def test_cli_json_summary(tmp_path, capfd):
    out, summary = tmp_path / "out.pdb", tmp_path / "run.json"
    assert main(["run", str(EXAMPLE_DCD), "--top", str(EXAMPLE_PDB), "-o", str(out), "--stride", "10",
                 "--samples", "2", "--json", str(summary), "--quiet"]) == 0
    data = json.loads(summary.read_text())
    assert (data["n_frames"], data["n_samples"], data["n_residues"], data["n_atoms"]) == (4, 2, 20, 154)
    assert data["method"] == "model" and data["mapping"] == "ca" and data["output"] == str(out)
    assert md.load(str(out)).n_frames == 8


GROMACS = EXAMPLES / "gromacs"


@pytest.mark.parametrize("ext", [".xtc", ".dcd", ".h5"])
def test_boxes_and_times_carried_and_resumed(tmp_path, monkeypatch, ext):
    """A GROMACS trajectory (5 nm box, 1 ps a frame), every 2nd frame: the output has the input's boxes (and times,
    but in DCD), and an interrupted run resumed gives the same bytes (they were frame indices and no box)."""
    options = {"top": str(GROMACS / "conf_ca.gro"), "stride": 2, "chunk": 4, "progress": False}
    (tmp_path / "whole").mkdir()
    whole = tmp_path / "whole" / f"out{ext}"
    backmap(str(GROMACS / "traj_ca.xtc"), str(whole), **options)
    given = md.load(str(GROMACS / "traj_ca.xtc"), top=options["top"], stride=2)
    if ext == ".xtc":
        _, time, _, box = md.formats.XTCTrajectoryFile(str(whole)).read()
        np.testing.assert_allclose(box, given.unitcell_vectors, atol=1e-6)
        np.testing.assert_allclose(time, given.time)
    elif ext == ".h5":
        got = md.load(str(whole))
        np.testing.assert_allclose(got.unitcell_lengths, given.unitcell_lengths, atol=1e-6)
        np.testing.assert_allclose(got.time, given.time)
    else:
        _, lengths, angles = md.formats.DCDTrajectoryFile(str(whole)).read()
        np.testing.assert_allclose(lengths, given.unitcell_lengths * 10.0, atol=1e-4)
        np.testing.assert_allclose(angles, given.unitcell_angles, atol=1e-4)
    out = tmp_path / f"out{ext}"
    with monkeypatch.context() as patch:
        _Interrupt(patch, 2, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            backmap(str(GROMACS / "traj_ca.xtc"), str(out), **options)
    backmap(str(GROMACS / "traj_ca.xtc"), str(out), resume=True, **options)
    if ext != ".h5":
        assert _content(out) == _content(whole)
    else:  # HDF5 files hold their own creation times: the same values instead
        a, b = md.load(str(out)), md.load(str(whole))
        assert (a.xyz == b.xyz).all() and (a.time == b.time).all() and (a.unitcell_vectors == b.unitcell_vectors).all()


def test_write_error_keeps_finished_frames_and_resumes(tmp_path, monkeypatch):
    """A full disk (ENOSPC injected into the third write): clear error, finished frames kept, resume completes."""
    whole = tmp_path / "whole.xtc"
    _run(EXAMPLE_DCD, whole)
    out = tmp_path / "out.xtc"
    with monkeypatch.context() as patch:
        original = MdtrajBackend.write
        calls = []

        def write(backend, xyz, first_frame, **frames):
            calls.append(first_frame)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original(backend, xyz, first_frame, **frames)

        patch.setattr(MdtrajBackend, "write", write)
        with pytest.raises(BackmapOutputError, match=r"out.xtc: writing frame\(s\) 8-11 failed: No space left.*"
                                                     r"8 frame\(s\) written before are kept"):
            _run(EXAMPLE_DCD, out)
    assert not out.exists()
    with md.formats.XTCTrajectoryFile(str(tmp_path / ".out.xtc.partial.xtc")) as kept:
        assert len(kept.read()[0]) == 8
    _run(EXAMPLE_DCD, out, resume=True)
    assert out.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("ext", [".h5", ".xtc", ".dcd", ".pdb"])
def test_a_file_size_limit_stops_the_run_with_what_is_kept(tmp_path, ext):
    """A file size limit (``ulimit -f``, a batch system's ``h_fsize``) reached while writing: a one-line error and
    status 2 (HDF5 wrote a cut, unreadable H5 file and the run reported success; XTC and DCD failed with mdtraj's
    tracebacks, DCD's a TypeError from mdtraj's own error path)."""
    resource = pytest.importorskip("resource")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16000, 16000))

    out = tmp_path / f"out{ext}"
    done = subprocess.run([sys.executable, "-m", "backmap_plugin.cli", "run", str(EXAMPLE_DCD), "--top",
                           str(EXAMPLE_PDB), "-o", str(out), "--quiet", "--chunk", "4"], preexec_fn=limit,
                          capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[-1].startswith(f"backmap: error: {out}: "), done.stderr
    assert " failed: " in lines[-1] and "Traceback" not in done.stderr and "[Errno" not in lines[-1]
    assert not out.exists()


def test_a_second_run_to_the_same_output_is_refused_while_the_first_runs(tmp_path):
    """Two runs to one output (a job submitted twice) replaced each other's partial file: the first finished all
    its frames, then died on its lost partial file and left a progress record that blocked every retry. A run
    holds a lock on its output; the lock goes with its process, SIGKILL included."""
    pytest.importorskip("fcntl")
    out = tmp_path / "out.xtc"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom backmap_plugin.io.lock import "
                               "OutputLock\nwith OutputLock(sys.argv[1]):\n    print('held', flush=True)\n"
                               "    time.sleep(60)\n", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BackmapInputError, match=rf"out.xtc: another writer is writing this output \(backmap "
                                                    rf"run, pid {holder.pid} on .+\); wait for it to end, or stop it"):
            _run(EXAMPLE_DCD, out)
    finally:
        holder.kill()
        holder.wait()
    assert _run(EXAMPLE_DCD, out).n_frames == 38  # the killed holder's lock went with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.xtc"]


def test_a_file_system_without_locks_runs_without_one(tmp_path, monkeypatch):
    """Where the file system has no advisory locks (flock fails with ENOLCK, as on some network file systems), the
    run goes on without a lock (it must not read as another writer holding it)."""
    fcntl = pytest.importorskip("fcntl")

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "out.xtc"
    assert _run(EXAMPLE_DCD, out).n_frames == 38
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.xtc"]


def test_cli_write_error_is_one_line(tmp_path, capfd, monkeypatch):
    original = PdbBackend.write

    def write(backend, xyz, first_frame, **frames):
        if first_frame >= 4:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return original(backend, xyz, first_frame, **frames)

    monkeypatch.setattr(PdbBackend, "write", write)
    out = tmp_path / "out.pdb"
    status = main(["run", str(EXAMPLE_DCD), "--top", str(EXAMPLE_PDB), "-o", str(out), "--chunk", "4", "--quiet"])
    err = capfd.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("backmap: error:") and "Input/output error" in err[-1] and "4 frame(s)" in err[-1]
    assert not out.exists() and (tmp_path / ".out.pdb.partial.pdb").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "term", "kill-9"])
def test_stopped_process_resumes_to_the_same_file(tmp_path, long_dcd, sig):
    """Ctrl-C (SIGINT), SIGTERM (a batch system's time limit: it ended the run without a word, status 143) or
    SIGKILL (no cleanup at all) in the middle of a real ``backmap run``; ``--resume`` completes it identically."""
    args = [sys.executable, "-m", "backmap_plugin.cli", "run", str(long_dcd), "--top", str(EXAMPLE_PDB),
            "--chunk", "10", "--method", "ideal", "--quiet"]
    whole = tmp_path / "whole.xtc"
    subprocess.run([*args, "-o", str(whole)], check=True, capture_output=True)
    out = tmp_path / "out.xtc"
    record = Path(record_path(out))
    # as in a terminal: SIGINT not ignored, even where the test runner was started with it ignored
    # (a background job of a non-interactive shell), which Python would otherwise keep
    proc = subprocess.Popen([*args, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if record.exists() and json.loads(record.read_text())["frames_done"] >= 20:
            break
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.fail("the run finished before it could be killed; make the input longer")
    proc.send_signal(sig)
    err = proc.communicate()[1]
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "backmap: interrupted; " in err and "with --resume" in err
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "backmap: terminated; " in err and "with --resume" in err
    assert not out.exists() and record.exists()
    done = subprocess.run([*args, "-o", str(out), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed at frame" in done.stdout
    assert out.read_bytes() == whole.read_bytes()


def _in_atomic_write(path: Path, then: str) -> subprocess.Popen:
    """A process inside ``atomic_write(path)`` (its temporary file ``.<name>.<pid>.partial`` made) that then runs
    ``then`` (Python); started once it is there."""
    code = ("import os, signal, sys, time\nfrom backmap_plugin.io.atomic import atomic_write\n"
            f"with atomic_write(sys.argv[1]):\n    print(flush=True)\n    {then}\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    return proc


def _killed_while_writing(path: Path) -> Path:
    """What a process killed with SIGKILL while it wrote ``path`` atomically leaves: its empty temporary file."""
    proc = _in_atomic_write(path, "os.kill(os.getpid(), signal.SIGKILL)")
    assert proc.wait() == -signal.SIGKILL
    left = path.parent / f".{path.name}.{proc.pid}.partial"
    assert left.exists() and left.stat().st_size == 0
    return left


def test_a_killed_runs_record_temporaries_are_removed_by_the_next_run(tmp_path, monkeypatch):
    """A run killed (SIGKILL) while it rewrote its progress record left .<record>.<pid>.partial behind for good; the
    next run of the output (a fresh start, a resume) removes those of processes that no longer run, never one of a
    process that is writing."""
    out = tmp_path / "out.xtc"
    record = Path(record_path(out))
    stale = _killed_while_writing(record)
    live = _in_atomic_write(record, "time.sleep(600)")
    try:
        writing = record.parent / f".{record.name}.{live.pid}.partial"
        with monkeypatch.context() as patch:
            _Interrupt(patch, 1, KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                _run(EXAMPLE_DCD, out)
        assert not stale.exists() and writing.exists() and record.exists()
        stale = _killed_while_writing(record)
        assert _run(EXAMPLE_DCD, out, resume=True).resumed_from == CHUNK
        assert not stale.exists() and writing.exists() and out.exists()
    finally:
        live.kill()
        live.wait()


def test_a_trajectory_cut_short_ends_the_run_with_an_error(tmp_path, monkeypatch, capfd):
    """``backmap run`` of an .xtc cut inside its fourth frame wrote the three whole ones and exited 0, as a finished
    run; now it writes them (and the --json summary) and ends with an error naming the file and its last whole
    frame, status 2. Resumed after an interruption, it ends so too, with the file an uninterrupted run writes; the
    API warns (CutShortWarning) and says so in the result."""
    from backmap_plugin.api import CutShortWarning

    data = Path(__file__).resolve().parent / "data" / "martini3"
    cut = tmp_path / "cut.xtc"
    cut.write_bytes((data / "md.xtc").read_bytes()[:20000])
    args = ["run", str(cut), "--top", str(data / "md.gro"), "--method", "ideal", "--chunk", "1", "--quiet"]
    out = tmp_path / "out.xtc"
    status = main([*args, "-o", str(out), "--json", str(tmp_path / "run.json")])
    err = capfd.readouterr().err.strip().splitlines()
    message = (f"{cut}: the file is cut short (it ends inside a frame: a run killed while writing it, or one still "
               f"writing it?): its last whole frame read is frame 2; {out} holds the 3 frame(s) read up to it")
    assert status == 2 and err[-1] == f"backmap: error: {message}"
    with md.formats.XTCTrajectoryFile(str(out)) as handle:
        assert len(handle.read()[0]) == 3
    assert json.loads((tmp_path / "run.json").read_text())["cut_short"] == message
    resumed = tmp_path / "resumed.xtc"
    with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _Interrupt(patch, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            backmap(str(cut), str(resumed), top=str(data / "md.gro"), method="ideal", chunk=1, progress=False)
    assert not [w for w in caught if w.category is CutShortWarning]  # (stopped before it read to the end)
    assert main([*args, "-o", str(resumed), "--resume"]) == 2
    assert capfd.readouterr().err.strip().splitlines()[-1] == "backmap: error: " + message.replace(str(out),
                                                                                                   str(resumed))
    assert resumed.read_bytes() == out.read_bytes() and not Path(record_path(resumed)).exists()
    assert main([*args, "-o", str(resumed), "--resume"]) == 2  # the output is there: nothing to resume
    assert "nothing to resume" in capfd.readouterr().err


def test_resume_through_a_linked_folder(tmp_path, monkeypatch):
    """The same input reached through a linked folder is the same input (its real path is recorded); a record
    made before, which kept the path through the link, resumes too."""
    (tmp_path / "real").mkdir()
    shutil.copy(EXAMPLE_DCD, tmp_path / "real" / "ca.dcd")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    out = tmp_path / "real" / "out.xtc"
    with monkeypatch.context() as patch:
        _Interrupt(patch, 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path / "link" / "ca.dcd", tmp_path / "link" / "out.xtc")
    record = json.loads(Path(record_path(out)).read_text())
    assert record["settings"]["input"]["path"] == str(tmp_path / "real" / "ca.dcd")
    record["settings"]["input"]["path"] = str(tmp_path / "link" / "ca.dcd")  # as records made before kept it
    Path(record_path(out)).write_text(json.dumps(record))
    result = _run(tmp_path / "real" / "ca.dcd", out, resume=True)
    assert result.resumed_from == CHUNK and result.n_frames == 38
