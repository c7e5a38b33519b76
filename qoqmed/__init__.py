__version__ = "0.1.0"

# The one hand-written line of the package, because it must run before anything imports bitsandbytes (peft, accelerate and
# transformers' Trainer all do): drop bitsandbytes' warning that its optional Hub kernel is unavailable (offline, or without
# the `kernels` package); it falls back to its own CPU code. Why, and the check: nbs/04_model.ipynb.
import logging as _logging
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community"))
