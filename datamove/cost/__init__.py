"""Cost estimates for ``datamove plan``: a price table and the arithmetic on a plan.

``prices.yaml`` (shipped, public list prices) merged with the user's price files
(table.py); the plan's counts, gathered as it streams (counts.py); the counts
priced per dataset (estimate.py) and shown as a table (render.py). Nothing here
talks to a store; commands/copy.py wires it into ``plan``. docs/COST.md.
"""
