"""Exceptions that carry a message meant for the user, not a stack trace."""


class VitkitError(Exception):
    """A problem with the user's input (file, key, shape, value); the CLI prints it as one line."""


class CheckpointError(VitkitError):
    """A checkpoint is missing, unreadable, or does not fit the model."""
