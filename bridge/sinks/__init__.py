"""Sinks: where events go. Each is a config model, a pure encoder and a transport."""
