import os
import sysconfig
from pathlib import Path

from turnout.triton.embedded import SCORING_BACKEND_DIR, ServerFiles, assemble_backend_dir, server_environment


def test_backend_dir_holds_python_backend_and_ours(tmp_path: Path) -> None:
    target = assemble_backend_dir(tmp_path / "backends")
    python_dir = target / "python"
    for name in ("libtriton_python.so", "triton_python_backend_utils.py", "triton_python_backend_stub"):
        path = python_dir / name
        # Real files: Triton refuses a backend library whose real path leaves the backend directory.
        assert path.is_file() and not path.is_symlink(), name
    assert os.access(python_dir / "triton_python_backend_stub", os.X_OK)
    assert (target / "python_scoring" / "model.py").resolve() == SCORING_BACKEND_DIR / "model.py"
    # Assembling again is a no-op, not an error.
    assemble_backend_dir(tmp_path / "backends")


def test_server_environment_puts_our_interpreter_first(tmp_path: Path) -> None:
    files = ServerFiles.locate()
    env = server_environment(files, tmp_path)
    import sys

    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    lib_path = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert str(files.libs) in lib_path
    assert sysconfig.get_config_var("LIBDIR") in lib_path
    assert env["TURNOUT_LOG_DIR"] == str(tmp_path)


def test_free_ports_are_distinct() -> None:
    from turnout.triton.embedded import free_ports

    for _ in range(50):
        ports = free_ports(3)
        assert len(set(ports)) == 3
