"""Run side effects: output files and progress."""

from genefl.callbacks.base import Callback, CallbackList, ClientRoundRecord, RoundRecord
from genefl.callbacks.progress import ProgressBar
from genefl.callbacks.tensorboard import TensorBoardLogger
from genefl.callbacks.writers import ClientLog, ResultsJSON, RoundsCSV

__all__ = [
    "Callback",
    "CallbackList",
    "ClientLog",
    "ClientRoundRecord",
    "ProgressBar",
    "ResultsJSON",
    "RoundRecord",
    "RoundsCSV",
    "TensorBoardLogger",
]
