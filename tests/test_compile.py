"""`robench train --compile`: every defense compiles, and compiling changes no result beyond
float rounding (deterministic defenses) or the random draws (randomized ones)."""

from __future__ import annotations

import pytest
import torch

from robench.defenses.tensor_dropout import TensorDropout, set_theta
from torch import nn
from robench.registry import defenses
from robench.training import TrainConfig, train

# Defenses that need a setting to train at all.
REQUIRED = {"quilting": {"quilt_data": "digits"}}


def _tiny_model():
    # Two factorizable convs are enough to check sampling under compile, and compile fast.
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def test_compiled_tensor_dropout_stays_random_and_equals_eager_at_theta_one():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = TensorDropout(theta=0.8).build(_tiny_model()).eval()
    compiled = torch.compile(model)
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        first, second = compiled(x), compiled(x)
        # Fresh Bernoulli masks on every compiled call, as in eager mode.
        assert not torch.allclose(first, second)
        set_theta(model, 1.0)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("defense", sorted(defenses()))
def test_every_defense_trains_under_compile_like_eager(defense, workspace):
    torch._dynamo.reset()
    config = dict(epochs=1, defense=defense, defense_params=REQUIRED.get(defense, {}), train_size=192, eval_runs=2)
    eager = train(TrainConfig(**config), workspace, name="eager").meta
    compiled = train(TrainConfig(**config), workspace, name="compiled", compile=True).meta
    assert compiled["status"] == "complete"
    loss_eager, loss_compiled = eager["history"][0]["loss"], compiled["history"][0]["loss"]
    # Same seed, same batches: deterministic defenses differ only by kernel rounding; random
    # ones (tensor dropout, noise, random starts) draw other numbers under compile.
    assert abs(loss_compiled - loss_eager) <= TOLERANCE * loss_eager, (loss_eager, loss_compiled)


TOLERANCE = 0.05
