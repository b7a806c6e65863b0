"""Imported last by the workers' fork server (:data:`genefl.engine.workers.PRELOAD`):
freeze the garbage collector's view of every object imported so far, so that collections
in a forked worker do not touch (and so copy) the pages the fork server shares with it.
Not for import elsewhere.
"""

import gc

gc.collect()
gc.freeze()
