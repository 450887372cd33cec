"""The `numprop` command, called through main(argv) as the console script does."""

import os
import re
from pathlib import Path

import numpy as np
import pytest

import numprop as npp
from numprop.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("NUMPROP_DATA_DIR")
needs_cifar = pytest.mark.skipif(
    not DATA or not (Path(DATA) / "cifar-10-batches-bin").is_dir(),
    reason="set NUMPROP_DATA_DIR to the folder holding cifar-10-batches-bin/ (CI does)",
)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "plot", "gradcheck"])
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: numprop " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--epochs", "0"], "expected a positive number"),
        (["train", "--lr", "fast"], "expected a number"),
        (["train", "--optimizer", "rmsprop"], "invalid choice"),
        (["train", "--tta-shift", "-2"], "expected a number >= 0"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_without_traceback(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line


def test_missing_files_exit_2_with_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no model" in err
    assert main(["train", "--data-dir", str(tmp_path), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10 not found" in err and "Traceback" not in err
    assert main(["gradcheck", str(tmp_path / "mine.py")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_gradcheck_command_on_a_configuration(capsys):
    assert main(["gradcheck", "--hidden", "6", "5", "--batchnorm", "--dropout", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "all gradients OK" in out and "5.gamma" in out


USER_LAYER = '''
import numpy as np
import numprop as npp

class Square(npp.Module):
    """y = x ** 2, with a planted bug: the backward forgets the factor 2."""
    def forward(self, x):
        self.x = x
        return x ** 2
    def backward(self, dout):
        return dout * self.x
'''


def test_gradcheck_command_on_a_users_file(tmp_path, capsys):
    path = tmp_path / "mylayer.py"
    path.write_text(USER_LAYER)
    assert main(["gradcheck", str(path)]) == 1
    out = capsys.readouterr().out
    assert "== Square" in out and "WRONG: input" in out
    assert "0.5 times the numerical one" in out
    path.write_text(USER_LAYER.replace("dout * self.x", "2 * dout * self.x"))
    assert main(["gradcheck", str(path)]) == 0
    assert "all gradients OK" in capsys.readouterr().out


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    block = ci.split('# --- the README\'s "Run the tests" block, verbatim ---\n')[1]
    block = block.split("# --- end ---")[0].strip()
    assert block and block in (ROOT / "README.md").read_text()


@needs_cifar
def test_train_evaluate_predict_plot_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--limit",
            "1000",
            "--epochs",
            "2",
            "--hidden",
            "64",
            "--val-size",
            "100",
            "--out",
            str(run),
            "--quiet",
            "--crop",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"test accuracy \d+\.\d\d%", out)
    for name in (
        "model.npz",
        "best.npz",
        "history.csv",
        "history.json",
        "summary.json",
        "curves.png",
        "confusion.png",
        "weights.png",
        "mistakes.png",
    ):
        assert (run / name).is_file(), name
    acc = float(re.search(r"test accuracy (\d+\.\d\d)%", out).group(1))
    assert acc > 15.0  # 2 epochs on 800 images: clearly better than chance (10%)

    assert main(["evaluate", str(run / "model.npz")]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "airplane" in out and "confusion matrix" in out

    from numprop.data.cifar10 import load_cifar10
    from numprop.data.images import write_png

    data = load_cifar10(download=False)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        write_png(paths[-1], data.test_images[i])
    assert main(["predict", str(run), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.count("%") == 3 for line in lines)

    for png in run.glob("*.png"):
        png.unlink()
    assert main(["plot", str(run)]) == 0
    assert len(list(run.glob("*.png"))) == 4


@needs_cifar
def test_interrupted_run_resumes_to_the_same_model(tmp_path, capsys):
    from numprop.training.experiment import TrainConfig, train_cifar10
    from numprop.training.io import load
    from numprop.training.trainer import Callback

    class Crash(Callback):
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 2:
                raise KeyboardInterrupt

    args = [
        "--limit",
        "600",
        "--epochs",
        "3",
        "--hidden",
        "32",
        "--dropout",
        "0.1",
        "--val-size",
        "100",
        "--quiet",
        "--no-plots",
    ]
    assert main(["train", *args, "--out", str(tmp_path / "full")]) == 0
    config = TrainConfig(hidden=[32], dropout=0.1, epochs=3, limit=600, val_size=100)
    with pytest.raises(KeyboardInterrupt):
        train_cifar10(
            config, tmp_path / "cut", progress=False, print_fn=lambda *a: None, callbacks=[Crash()]
        )
    assert not (tmp_path / "cut" / "model.npz").exists()
    # A setting this numprop does not know (from a newer one, say) is ignored with a warning.
    last = tmp_path / "cut" / "last.npz"
    saved = load(last)
    npp.save(
        last,
        saved.model,
        saved.preprocessing,
        {**saved.config, "from_the_future": 1},
        saved.history,
        saved.class_names,
        saved.training,
    )
    with pytest.warns(UserWarning, match="ignored unknown settings from_the_future"):
        assert main(["train", "--resume", str(tmp_path / "cut"), "--quiet", "--no-plots"]) == 0
    assert "resuming after epoch 2 of 3" in capsys.readouterr().out
    full, cut = load(tmp_path / "full" / "model.npz"), load(tmp_path / "cut" / "model.npz")
    for name, value in full.model.state_dict().items():
        np.testing.assert_array_equal(cut.model.state_dict()[name], value, err_msg=name)
    assert main(["train", "--resume", str(tmp_path / "nothing-here"), "--quiet"]) == 2
