"""Training core: state, the jitted step, shardings, checkpoints, the loop, writers."""

from alignax.train.state import TrainState
from alignax.train.step import make_train_step

__all__ = ["TrainState", "make_train_step"]
