"""alignax: reward modeling and preference alignment in JAX."""

from alignax._src.xla_flags import ensure_cpu_flags as _ensure_cpu_flags

# Before any jax computation: XLA:CPU's YNNPACK fusions miscompile (alignax._src.xla_flags).
_ensure_cpu_flags()

__version__ = "0.1.0"
