"""Attack tests: each reproduces an attack against real parts and asserts the exact refusal."""
