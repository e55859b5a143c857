"""`python -m autograder`: the CLI. From a checkout, an interpreter without the kit's
dependencies hands over to the checkout's own virtual environment (.venv) when there is one."""
import os
import sys
from pathlib import Path

try:
    import typer  # noqa: F401 - the CLI's one dependency that a bare interpreter is sure to lack
except ModuleNotFoundError:
    venv = Path(__file__).resolve().parent.parent / ".venv"
    venv_python = venv / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(str(venv_python), [str(venv_python), "-m", "autograder", *sys.argv[1:]])
    raise

from autograder.commands.cli import main  # noqa: E402

main()
