"""The README's opening example runs as written and its gradient check passes."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_gradchecks():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 15
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)
    assert "all gradients OK" in out.getvalue()
    assert namespace["value"] > 0  # the loss of the training step
