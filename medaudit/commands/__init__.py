"""Command areas of the ``medaudit`` CLI: each module defines ``register(app)`` and is found at start."""
