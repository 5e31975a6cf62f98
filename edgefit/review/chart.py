"""The per-layer latency bar chart (plotext through textual-plotext, an optional dependency).

Imported only when textual-plotext is installed; `app.py` shows a hint otherwise.
"""

from __future__ import annotations

from textual_plotext import PlotextPlot

from planner.plan import Plan


class LatencyChart(PlotextPlot):
    """Horizontal bars: each layer's predicted latency under the current plan, in ms."""

    def show(self, plan: Plan) -> None:
        plt = self.plt
        plt.clear_data()
        names = list(plan.layers)[::-1]  # plotext draws the first bar at the bottom
        values = [lp.predicted.latency_ms if lp.predicted is not None else 0.0
                  for lp in reversed(plan.layers.values())]
        if any(values):
            plt.bar(names, values, orientation="horizontal", width=0.1, color="cyan")
            plt.title("predicted latency per layer (ms)")
        else:
            plt.title("no layer has a chosen option (infeasible plan)")
        self.refresh()
