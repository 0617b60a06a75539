"""Maximum-likelihood training of any TFP distribution.

:func:`fit` (``loop``) is the entry point; its parts each have a module:
``data`` (input checks, validation split, ``tf.data`` pipeline), ``step``
(the compiled step: non-finite skip, rollback, ``tf.distribute``),
``optimizer`` (:func:`default_optimizer`), ``averaging`` (the weight
average), ``checkpoints`` (:class:`History` and resumable checkpoints) and
``summaries`` (progress bar and TensorBoard).
"""

from tfp_realnvp.training.checkpoints import History
from tfp_realnvp.training.loop import TrainingDiverged, fit
from tfp_realnvp.training.optimizer import default_optimizer

__all__ = ["fit", "History", "TrainingDiverged", "default_optimizer"]
