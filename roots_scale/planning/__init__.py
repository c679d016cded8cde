"""The layout planner behind `roots-train plan`: memory, communication and step time of a tensor × pipeline ×
data layout, from the config alone (no data, no processes), and a search over the layouts a cluster allows."""
