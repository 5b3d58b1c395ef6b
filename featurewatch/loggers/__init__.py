"""Logging back-ends behind one small interface (:class:`Sink`)."""

from featurewatch.loggers.base import Event, LoggedImage, Sink


def sinks_for(trainer):  # placeholder until the adapters land
    return []


__all__ = ["Event", "LoggedImage", "Sink", "sinks_for"]
