"""roots-launch: cluster profiles, training and data-pipeline job scripts, and the command line that renders them."""
