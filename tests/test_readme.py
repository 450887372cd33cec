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


def test_readme_scikit_learn_example_runs():
    from sklearn.datasets import load_digits

    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
        if "GridSearchCV" in b
    )
    x, y = load_digits(return_X_y=True)
    namespace = {"X": x[:600], "y": y[:600]}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), namespace)
    search = namespace["search"]
    assert search.best_params_["mlpclassifier__alpha"] in (1e-4, 1e-3)
    assert search.best_score_ > 0.85  # digits: an MLP gets well above chance (10%)
    assert len(out.getvalue().split("[")[1].split()) == 5  # five predictions printed
