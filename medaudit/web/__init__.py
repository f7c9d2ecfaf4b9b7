"""The online feedback and appeal portal (``medaudit web``): see :mod:`medaudit.web.app`."""
