"""Training backends: one module per algorithm behind ``base.Backend``, found through ``registry``."""
