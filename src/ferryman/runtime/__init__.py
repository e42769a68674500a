"""The step runtime: what runs *inside* a python step's process or container.

``python -m ferryman.runtime`` reads the step payload from the environment,
imports the step function, calls it and prints the result line (see
``ferryman.infra.base``). Everything in this package imports only the standard
library so that a step starts fast (no pydantic, no ferryman.domain/infra).
"""
