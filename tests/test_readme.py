"""The README's "Extending softgrad" examples (a backend, a loss, an optimizer) run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def extending_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Extending softgrad", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_extending_section_has_an_example_for_each_kind():
    blocks = extending_examples()
    assert len(blocks) == 4
    assert "class MyBackend(ArrayAPIBackend)" in blocks[0] and "register_backend(" in blocks[1]
    assert "register_loss(" in blocks[2] and "register_optimizer(" in blocks[3]


# run after the examples: the example loss's gradient against autograd, the example optimizer against its rule
CHECK_THE_EXAMPLES = """
import numpy as np
import torch
from softgrad.backends import get_backend

rng = np.random.default_rng(0)
z, y = rng.standard_normal((16, 5)) * 3, rng.integers(0, 5, 16)
zt = torch.tensor(z, requires_grad=True)
p = torch.softmax(zt, dim=1)
expected = ((p - torch.nn.functional.one_hot(torch.tensor(y), 5)) ** 2).sum(dim=1).mean()
(autograd,) = torch.autograd.grad(expected, zt)
for name in ("numpy", "torch", "array-api-strict", "mine"):
    be = get_backend(name)
    loss, grad = be.brier_and_grad(be.asarray(z), be.asarray(y))
    np.testing.assert_allclose(be.to_numpy(loss), expected.item(), rtol=1e-12)
    np.testing.assert_allclose(be.to_numpy(grad), autograd.numpy(), rtol=1e-10, atol=1e-14)
    params, state = be.signum_step([be.asarray(np.ones(3))], [be.asarray(np.array([1.0, -2.0, 0.0]))],
                                   be.signum_init(None), lr=0.5, beta=0.9)
    np.testing.assert_array_equal(be.to_numpy(params[0]), [0.5, 1.5, 1.0])
"""


def test_the_extending_examples_run(tmp_path):
    script = tmp_path / "extending.py"
    script.write_text("\n\n".join(extending_examples()) + CHECK_THE_EXAMPLES + "\nprint('examples ran')\n")
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("examples ran")
