"""The README's library example must run as written."""

import pathlib
import re


def test_library_example_runs(capsys):
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(block for block in blocks if "ConsensusPurifier(" in block)
    exec(compile(example, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert all(line.split()[0] in ("clean", "illusion", "uncertain") for line in lines)
