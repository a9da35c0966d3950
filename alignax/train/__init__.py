"""Training core: state, the jitted step, shardings, checkpoints, the loop, writers."""

from alignax.train.few_shot import user_weights_loss
from alignax.train.state import TrainState
from alignax.train.step import make_train_step

__all__ = ["TrainState", "make_train_step", "user_weights_loss"]
