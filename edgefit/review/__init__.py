"""`edgefit review plan.json`: a Textual TUI to inspect, edit and re-solve plans.

The entry point is `edgefit.review.app.run_review`; importing this package imports nothing.
"""
