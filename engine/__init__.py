"""The pure core: models, catalogs, detectors, customer state, arbitration math, clock.

Nothing here imports Ray or does I/O (a test checks it).
"""
