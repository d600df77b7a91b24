"""The progress record of an unfinished run, for ``backmap run --resume`` and ``backmap refine --resume``.

While :func:`backmap_plugin.api.backmap` streams frames into the partial
output file (see :class:`backmap_plugin.io.trajectory.TrajectoryWriter`), it keeps a
small JSON record next to it, ``.<output name>.progress.json``, rewritten
atomically after every chunk: the settings of the run, how many input
frames are done and how far the partial file is complete. A run that was
interrupted (Ctrl-C, a kill, a full disk) leaves both; resuming checks that
the settings are the same, cuts the partial file back to the last complete
chunk and continues from the next input frame. The record is removed when
the output is complete. A run killed while it rewrote the record (``SIGKILL``)
also leaves the record's temporary file, ``.<record name>.<pid>.partial``;
the next run of the output removes it (:meth:`ProgressRecord.resume_point`).
"""

from __future__ import annotations

import json
import os

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.io.atomic import hidden_path, remove_stale_temporaries, write_json

#: Format tag written into every record.
RECORD_FORMAT = "backmap-progress/1"


def record_path(output) -> str:
    """Path of the progress record of ``output`` (hidden file in its directory,
    :func:`~backmap_plugin.io.atomic.hidden_path`)."""
    return hidden_path(output, ".progress.json")


def input_fingerprint(path) -> dict | None:
    """Real path (links followed), size and modification time (ns) of an input file, to notice a changed input;
    None for no file."""
    if path is None:
        return None
    stat = os.stat(path)
    return {"path": os.path.realpath(os.fspath(path)), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _real(value):
    """A setting as compared: an input fingerprint's path followed to its real path (records made before kept
    the absolute path, perhaps through a linked folder)."""
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return {**value, "path": os.path.realpath(value["path"])}
    return value


class ProgressRecord:
    """Read, check and write the progress record of one output file.

    Parameters
    ----------
    output : str or os.PathLike
        The final output file of the run.
    settings : dict
        JSON-ready description of everything that determines the output
        (inputs, method, seed, chunking ...); a record is resumed only when
        its settings are equal.

    Attributes
    ----------
    path : str
        The record file.
    """

    def __init__(self, output, settings: dict):
        self.output = os.fspath(output)
        self.path = record_path(output)
        self.settings = settings

    def exists(self) -> bool:
        """Whether an earlier run left a record."""
        return os.path.exists(self.path)

    def load(self) -> dict:
        """The saved record, checked against this run's settings.

        Returns
        -------
        dict
            ``frames_done`` (input frames finished), ``structures_written``,
            ``writer`` (the writer's resume state) and ``tallies`` (None in
            records that have none).

        Raises
        ------
        BackmapInputError
            Unreadable record, or one made with other settings (names the
            first setting that differs).
        """
        try:
            with open(self.path, encoding="utf-8") as handle:
                saved = json.load(handle)
            if saved.get("format") != RECORD_FORMAT:
                raise ValueError(f"format {saved.get('format')!r}, expected {RECORD_FORMAT!r}")
            missing = {"frames_done", "writer"} - set(saved)
            if missing:
                raise KeyError(", ".join(sorted(missing)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackmapInputError(
                f"{self.output}: cannot resume: progress record {self.path} is unreadable ({exc}); "
                "start over with overwrite=True"
            ) from exc
        old = saved.get("settings", {})
        for key in sorted(set(old) | set(self.settings)):
            was, now = _real(old.get(key)), _real(self.settings.get(key))
            if was != now and isinstance(was, dict) and isinstance(now, dict) and was.get("path") == now.get("path"):
                raise BackmapInputError(  # (an input fingerprint: say what changed, not the dicts)
                    f"{self.output}: cannot resume: the {key} file {now['path']} changed since the unfinished run "
                    f"(size {was.get('size')} -> {now.get('size')} bytes"
                    f"{', modified since' if was.get('mtime_ns') != now.get('mtime_ns') else ''}: a simulation "
                    "still writing it, or a copy?); start over with overwrite=True"
                )
            if was != now:
                raise BackmapInputError(
                    f"{self.output}: cannot resume: the unfinished run used {key} = {old.get(key)!r}, this one "
                    f"{self.settings.get(key)!r}; rerun with the same settings or start over with overwrite=True"
                )
        return saved

    def resume_point(self, overwrite: bool, resume: bool) -> dict | None:
        """Where a run of :attr:`output` starts: the saved record to continue (:meth:`load`), or None for the start.

        Refuses to lose work: an unfinished run's record without ``resume``
        or ``overwrite``, an existing output without ``overwrite``.
        ``resume`` and ``overwrite`` together (for workflows): continue an
        unfinished run made with the same settings, else start over. First
        removes the temporary files of the record that killed runs left
        (:func:`~backmap_plugin.io.atomic.remove_stale_temporaries`; never
        one of a process still running): call it under the output's lock.

        Parameters
        ----------
        overwrite : bool
            Start over where there is an output or an unfinished run.
        resume : bool
            Continue an unfinished run.

        Raises
        ------
        BackmapInputError
            As said, and a complete output with ``resume`` but no ``overwrite``
            (nothing to resume).
        """
        remove_stale_temporaries(self.path)
        if self.exists():
            if resume:
                try:
                    return self.load()
                except BackmapInputError:
                    if not overwrite:
                        raise
            elif not overwrite:
                raise BackmapInputError(
                    f"{self.output}: an unfinished run of this output was found (progress record {self.path}): "
                    "pass resume=True to continue it or overwrite=True to start over"
                )
            self.remove()
        elif os.path.exists(self.output) and not overwrite:
            if resume:
                raise BackmapInputError(f"{self.output}: nothing to resume: the output is complete (no progress "
                                        "record)")
            raise BackmapInputError(f"{self.output}: output file exists; pass overwrite=True to replace it")
        return None

    def save(self, frames_done: int, structures_written: int, writer_state: dict, tallies: dict | None = None) -> None:
        """Write the record atomically (:func:`backmap_plugin.io.atomic.write_json`).

        Parameters
        ----------
        frames_done : int
            Input frames finished.
        structures_written : int
            Structures in the partial output.
        writer_state : dict
            :meth:`backmap_plugin.io.trajectory.TrajectoryWriter.state`.
        tallies : dict, optional
            What the run counted of the frames finished
            (:meth:`backmap_plugin.api.Backmapper.tallies`; ``refine``: its
            ``seconds`` so far), for the summary of the resumed run.
        """
        payload = {
            "format": RECORD_FORMAT,
            "output": os.path.basename(self.output),
            "settings": self.settings,
            "frames_done": int(frames_done),
            "structures_written": int(structures_written),
            "writer": writer_state,
            "tallies": tallies,
        }
        write_json(self.path, payload)

    def remove(self) -> None:
        """Delete the record (the output is complete)."""
        if os.path.exists(self.path):
            os.remove(self.path)
