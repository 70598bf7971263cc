"""Errors raised by the evaluation engine."""


class EngineInputError(ValueError):
    """Bad input to the engine: the message names the column / spec key and what was expected."""
