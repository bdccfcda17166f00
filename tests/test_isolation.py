"""The isolated job process: TensorFlow's start-up lines stay off the terminal unless hydra.verbose=true."""
from __future__ import annotations

import pytest

from ptycho_exp.isolation import is_tensorflow_noise

NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796583555.887435    8007 port.cc:153] oneDNN custom operations are on. You may see ...\n",
    b"I0000 00:00:1796583555.887783    8007 cudart_stub.cc:31] Could not find cuda drivers on your machine\n",
    b"E0000 00:00:1796580033.381596   13815 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    b"appropriate compiler flags.\n",
]
OURS = [
    b"[18:00:34][ptycho_exp.models.pinn][INFO] PINN: N=32 gridsize=1 n_filters_scale=2 -> 1921666 parameters\n",
    b"Traceback (most recent call last):\n",
    b"OSError: [Errno 28] No space left on device\n",
    b"I0000 is not a TensorFlow line without its source location\n",
]


@pytest.mark.parametrize("line", NOISE)
def test_tensorflow_start_up_lines_are_recognised(line):
    assert is_tensorflow_noise(line)


@pytest.mark.parametrize("line", OURS)
def test_the_jobs_own_lines_and_errors_pass(line):
    assert not is_tensorflow_noise(line)


def test_a_job_keeps_tensorflow_start_up_lines_in_its_folder(cli, tmp_path):
    """One real job through the entry point: its terminal shows the job's lines, not TensorFlow's."""
    job = tmp_path / "job"
    out = cli(["data.N=32", "data.object_size=128", "data.n_train=16", "data.test_stride=8", "train.epochs=1",
               "train.tensorboard=false", "train.save_model=false", "eval.figures=false",
               "eval.upsample_factor=10", f"hydra.run.dir={job}"])
    assert out.returncode == 0, out.stderr[-3000:]
    terminal = out.stdout + out.stderr
    assert "ptycho_exp.run" in terminal and "epoch 1/1" in terminal
    assert "absl::InitializeLog" not in terminal and "cudart_stub" not in terminal and "port.cc" not in terminal
    assert "InitializeLog" in (job / "tensorflow.log").read_text()
