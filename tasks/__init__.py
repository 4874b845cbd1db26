"""Prefect tasks: thin, typed, retried wrappers over the ``farmkeeper`` core."""
