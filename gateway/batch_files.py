"""A batch job's files, free of any server: the input listed and cut into mini-batches, each finished
mini-batch's rows kept in a part file, and the output file assembled from the parts in input order.

A part file (the rows of the mini-batches one call finished) is written whole (a temporary file renamed) before
those mini-batches are marked done, each with the part file's name, and the output is made from the parts that
done records name: a crash at any point leaves no half row, and a mini-batch computed twice (it finished, the
gateway died before marking it) is still written once.
"""

from __future__ import annotations

import glob
import hashlib
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from turnout.errors import BadInput

INPUT_TYPES = ("uri_folder", "uri_file")
_GLOB = set("*?[")


def list_input(path: str, input_type: str | None) -> tuple[str, list[str]]:
    """The input's files, sorted (a job is deterministic): a folder recursively (hidden files left out, as
    a data folder's ``.gitkeep`` is not data), one file, or a glob. Returns the resolved input and its files."""
    if input_type is not None and input_type not in INPUT_TYPES:
        raise BadInput(f"--input-type {input_type!r}: use uri_folder or uri_file")
    if "://" in path:
        raise BadInput(f"the input {path!r} is a URL: Turnout reads inputs from the gateway's file system (a folder, "
                       "a file or a glob); copy the data there and give its path")
    if any(c in _GLOB for c in path):
        files = sorted(str(Path(p).resolve()) for p in glob.glob(os.path.expanduser(path), recursive=True)
                       if Path(p).is_file())
        if not files:
            raise BadInput(f"the input {path!r} matches no file")
        return path, files
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise BadInput(f"the input {path!r} does not exist (resolved to {resolved} on the gateway's machine)")
    if resolved.is_file():
        if input_type == "uri_folder":
            raise BadInput(f"the input {path!r} is a file, not a folder: use --input-type uri_file")
        return str(resolved), [str(resolved)]
    if input_type == "uri_file":
        raise BadInput(f"the input {path!r} is a folder, not a file: use --input-type uri_folder")
    files = sorted(str(p) for p in resolved.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(resolved).parts))
    if not files:
        raise BadInput(f"the input folder {path!r} holds no files")
    return str(resolved), files


def cut(files: Sequence[str], size: int) -> list[list[str]]:
    return [list(files[i:i + size]) for i in range(0, len(files), size)]


def fingerprint(endpoint: str, deployment: str, files: Sequence[str], settings: dict[str, Any], output_dir: str,
                instance_count: int) -> str:
    """What makes two submissions the same job: its inputs (names, sizes and times), where it writes, how."""
    digest = hashlib.sha256()
    digest.update(orjson.dumps([endpoint, deployment, settings, output_dir, instance_count],
                               option=orjson.OPT_SORT_KEYS))
    for name in files:
        try:
            stat = os.stat(name)
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}\0-\n".encode())
    return digest.hexdigest()


class JobFiles:
    """A job's folder: ``parts/`` (one file per done mini-batch), ``logs/`` (the script's output per
    mini-batch, the errors file, the job's own log); the output file goes to ``output_dir``."""

    def __init__(self, job_dir: Path, output_dir: Path, output_file_name: str) -> None:
        self.root, self.output_dir, self.output_file = job_dir, output_dir, output_dir / output_file_name
        self.parts, self.logs = job_dir / "parts", job_dir / "logs"

    def create(self) -> None:
        for folder in (self.parts, self.logs / "user", self.output_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def write_part(self, rows: dict[str, str]) -> str:
        """The rows of the mini-batches one call finished (key -> rows), in a new part file of its own, written
        whole; returns its name. A part file is never rewritten: a mini-batch run again lands in another one,
        and only the file its done record names is read."""
        name = f"{min(rows)}-{uuid.uuid4().hex[:12]}.json"
        _replace(self.parts / name, orjson.dumps(rows).decode())
        return name

    def write_user_log(self, key: str, text: str, attempt: int) -> None:
        if text:
            with (self.logs / "user" / f"{key}.txt").open("a", encoding="utf-8") as out:
                out.write(f"--- attempt {attempt} ---\n{text}" + ("" if text.endswith("\n") else "\n"))

    def log(self, line: str) -> None:
        with (self.logs / "job.log").open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    def assemble(self, done: Iterable[tuple[str, str]]) -> int:
        """The output file from the done mini-batches, (key, part file) in input order; returns its rows."""
        rows = 0
        cache: dict[str, dict[str, str]] = {}
        temporary = self.output_file.with_name(f".{self.output_file.name}.assembling")
        with temporary.open("w", encoding="utf-8") as out:
            for key, part_file in done:
                if part_file not in cache:
                    cache.clear()  # parts are written in about input order: keep one at a time
                    cache[part_file] = orjson.loads((self.parts / part_file).read_bytes())
                text = cache[part_file][key]
                rows += text.count("\n")
                out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.output_file)
        return rows

    def write_errors(self, failures: Iterable[tuple[str, str, str]]) -> Path:
        """``logs/errors.txt``: every failed file with its error and the script's traceback."""
        blocks = [f"file: {name}\nerror: {error}\n" + (f"{trace.rstrip()}\n" if trace else "")
                  for name, error, trace in failures]
        target = self.logs / "errors.txt"
        _replace(target, "\n".join(blocks))
        return target


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
