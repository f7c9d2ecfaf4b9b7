"""Screening on Apache Spark (``medaudit screen --engine spark``): see :mod:`medaudit.spark.runner`."""
