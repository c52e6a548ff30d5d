"""``make bench``: agentfleet's overhead measured against plain baselines in the same run.

Each measure module has ``ROWS`` (the row names it produces) and ``measure(ctx, work)``
returning its ``Row``s; ``bench.__main__`` runs them, prints the table and writes
``bench/results.json``. See issue 14 and the README's "Performance" section.
"""
