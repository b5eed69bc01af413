"""python/README.md's example runs, and prints what its comment says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import child_env

README = Path(__file__).resolve().parent.parent / "README.md"


def example() -> str:
    text = README.read_text()
    section = text[text.index("## Example") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_and_prints_what_it_says(tmp_path):
    code = example()
    assert len(code.strip().splitlines()) == 5, "the example is five lines"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=child_env())
    assert done.returncode == 0, done.stderr
    expected = re.search(r"# (\[.*\])", code).group(1)
    pattern = re.escape(expected).replace(r"\.\.\.", r"\d*")
    assert re.fullmatch(pattern, done.stdout.strip()), (done.stdout, expected)
    assert (tmp_path / "my-store" / "CONTROL").exists()
