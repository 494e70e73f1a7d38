"""Reports: result tables rendered to Markdown , Pareto fronts and plots."""
