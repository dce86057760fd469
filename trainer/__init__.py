"""agentserve's offline trainer: algorithms behind one learner interface, the training loop,
bundled environments, evaluation and export. Importing this package imports no torch; the
submodules that need it import it themselves.
"""
