"""Reports: result tables rendered to Markdown (and, later, Pareto fronts and plots)."""
