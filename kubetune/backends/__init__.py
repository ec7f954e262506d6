"""Training backends behind one interface; see ``base.Backend``."""

from kubetune.backends.base import Backend, TrainResult, algorithms, get_backend

__all__ = ["Backend", "TrainResult", "algorithms", "get_backend"]
